#!/usr/bin/env bash
# Generate the latchkey.v1 Python stubs (messages, gRPC services and their .pyi types) from proto/
# into OUT (default: clients/python/src). `make proto` runs this; the drift test runs it into a
# temp dir and compares. Never edit the generated files by hand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/clients/python/src}"
venv="$root/.venv/bin"
mkdir -p "$out/latchkey/v1"
cd "$root/proto"
"$venv/python" -m grpc_tools.protoc -I . \
  --plugin=protoc-gen-mypy="$venv/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$venv/protoc-gen-mypy_grpc" \
  --python_out="$out" --mypy_out="$out" \
  --grpc_python_out="$out" --mypy_grpc_out="$out" \
  latchkey/v1/*.proto
