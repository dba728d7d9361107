#!/usr/bin/env bash
# Fetch the JSON schemas the deploy tests validate against into .cache/schemas/.
#
# The Compose Specification schema ships inside the docker-compose 1.29.2 wheel on PyPI
# (compose/config/compose_spec.json). It is downloaded with pip (no dependencies, nothing
# installed) and the one file is unpacked; nothing fetched is committed. Idempotent: a second
# run finds the file and does nothing. (The Kubernetes schemas come with the
# kubernetes-validate package in the dev dependencies.)
#
# Prints the schema's path on stdout; everything else goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
version=1.29.2
cache="$root/.cache/schemas"
schema="$cache/compose-spec-docker-compose-$version.json"

if [ ! -s "$schema" ]; then
  mkdir -p "$cache"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetch-schemas: downloading docker-compose==$version (for its compose_spec.json)" >&2
  "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    "docker-compose==$version" -d "$tmp" >&2
  wheel="$(find "$tmp" -name "docker_compose-$version-*.whl" | head -n 1)"
  [ -n "$wheel" ] || { echo "fetch-schemas: no docker-compose $version wheel downloaded" >&2; exit 1; }
  "$python" - "$wheel" "$schema.tmp" <<'PY'
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    data = wheel.read("compose/config/compose_spec.json")
json.loads(data)  # refuse to cache something that is not JSON
with open(sys.argv[2], "wb") as out:
    out.write(data)
PY
  mv "$schema.tmp" "$schema"
fi
echo "$schema"
