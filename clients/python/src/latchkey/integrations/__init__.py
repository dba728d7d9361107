"""Connection-pool integrations that follow `RotatingCredentials`.

- `latchkey.integrations.psycopg`: a psycopg 3 connection factory and a `psycopg_pool` pool
  (extra `latchkey[psycopg]`).
- `latchkey.integrations.sqlalchemy`: a SQLAlchemy engine (extra `latchkey[sqlalchemy]`).

Both always connect with `credentials.current`, and on a rotation retire the connections opened
with the previous credential (idle ones at once, busy ones when they are returned) before the
rotation is acknowledged, so the old lease is revoked only after nothing uses it.
"""
