#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, postgres) are installed. When they are missing
# and we are root, install Debian's `postgresql` package; otherwise say how to get them.
set -euo pipefail

have_pg() {
  [ -n "${LATCHKEY_PG_BIN:-}" ] && [ -x "$LATCHKEY_PG_BIN/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
  command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  return 1
}

have_pg && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-postgres: installing Debian's postgresql package" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
  have_pg && exit 0
fi
cat >&2 <<MSG
ensure-postgres: PostgreSQL server binaries (initdb, postgres) not found.
Install them (Debian/Ubuntu: sudo apt-get install postgresql; macOS: brew install postgresql)
or set LATCHKEY_PG_BIN to the folder that holds initdb and postgres.
MSG
exit 1
