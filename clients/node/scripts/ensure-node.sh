#!/usr/bin/env bash
# Make sure Node.js 20+ and npm are on PATH for the Node SDK (clients/node); otherwise say how
# to get them. Nothing is skipped when they are missing: `make test` stops here.
set -euo pipefail

fail() {
  cat >&2 <<MSG
ensure-node: $1
The Node SDK (clients/node) and its tests need Node.js 20 or newer with npm.
Install them (Debian 13 / Ubuntu 24.04: sudo apt-get install nodejs npm; macOS: brew install node),
or put a Node.js 20+ installation's bin folder first on PATH, then run make again.
MSG
  exit 1
}

command -v node >/dev/null 2>&1 || fail "node was not found on PATH."
command -v npm >/dev/null 2>&1 || fail "npm was not found on PATH."
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 20 ] || fail "node $(node --version) is too old."
