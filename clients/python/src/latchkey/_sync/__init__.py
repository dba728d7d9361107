"""The blocking client, generated from `_async/` by `scripts/unasync.py`; do not edit by hand
(except `_backend.py`, the hand-written concurrency primitives)."""
