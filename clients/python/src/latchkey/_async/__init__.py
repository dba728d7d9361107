"""The asyncio client: the source of truth that `scripts/unasync.py` rewrites into `_sync/`."""
