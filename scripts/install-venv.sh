#!/usr/bin/env bash
# Create (or repair) .venv and install both distributions with their dev extras into it.
#
# Safe to interrupt and run again: a venv left without a working pip by an interrupted first run
# is recreated, and `make` only records the install (its stamp) once pip has finished.
# Usage: scripts/install-venv.sh PYTHON VENV
set -euo pipefail
python="${1:-python3}"
venv="${2:-.venv}"

step() { printf '==> %s\n' "$*" >&2; }

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  :
else
  if [ -e "$venv" ]; then
    step "$venv is incomplete (an earlier run was interrupted): recreating it"
  else
    step "creating the virtualenv $venv"
  fi
  "$python" -m venv --clear "$venv"
fi
step "installing latchkey (SDK, CLI) and latchkey-server with their dev extras into $venv"
step "  (first run: about a minute with a nearby package index, longer on a slow link; later runs: seconds)"
if ! "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar on \
  -e 'clients/python[cli,dev]' -e '.[dev]'; then
  step "pip did not finish; run the same make command again to resume (nothing is lost)"
  exit 1
fi
step "Python packages installed"
