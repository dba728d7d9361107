"""CLI tests share the SDK tests' upstream helpers."""

from tests.sdk.conftest import unique, upstreams

__all__ = ["unique", "upstreams"]
