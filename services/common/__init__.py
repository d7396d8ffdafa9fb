"""Shared building blocks of every service: connection, runtime, retry, logs, metrics, tracing, client."""
