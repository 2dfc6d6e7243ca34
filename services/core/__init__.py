"""What the API, the worker and the operator share: domain, settings, store, broker."""
