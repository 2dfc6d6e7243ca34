"""The API routes."""
