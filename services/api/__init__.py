"""The HTTP API of API.md."""
