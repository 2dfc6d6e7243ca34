"""Metrics, traces and the glue that puts a task's trace id on its log lines."""
