"""Observability: Prometheus metrics, structured logs, upstream health for gRPC health.

Label values come from fixed vocabularies (method names, status codes, outcomes, upstream and
operation names): never a path, key, role, token or secret.
"""
