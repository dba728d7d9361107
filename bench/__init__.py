"""latchkey's benchmark harness: `make bench` (`python -m bench [--quick]`).

Starts the real stack (Consul agent, OpenBao, PostgreSQL, the gateway as a subprocess),
measures each figure in the same run as its peer, prints a table and writes
`.latchkey/bench.json`. Figures, never assertions.
"""
