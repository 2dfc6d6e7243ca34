"""The Kubernetes operator: recovery that knows when a worker pod is gone."""
