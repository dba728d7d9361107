"""vault-dev: an in-memory, unsealed, Vault-HTTP-API-compatible server for development and tests.

Never a production upstream. Modules, one job each:

- ``app``: aiohttp layer (HTTP ↔ logical requests, envelopes, access log).
- ``core``: token check, ACL, routing, existence checks, lease registration.
- ``system``: the ``sys/`` backend; ``tokens`` / ``token_backend``: token store and its paths.
- ``kv``, ``approle``, ``database`` (+ ``postgres_plugin``): the other backends.
- ``leases``: lease table, reaper and cascade; ``policy``: HCL ACLs; ``ttl``: CalculateTTL.
- ``server``: start/stop and signal handling.
"""
