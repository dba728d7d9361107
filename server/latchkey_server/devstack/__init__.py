"""Starting the real local components (Consul agent, PostgreSQL cluster) for `make dev` and tests.

Both `latchkey-server dev` and the pytest fixtures use these classes, so the way a component is
started, probed for readiness and torn down exists once.
"""
