#!/usr/bin/env bash
# Generate the latchkey.v1 TypeScript stubs for the Node SDK (messages with their binary codec,
# and @grpc/grpc-js service definitions) from proto/ into OUT (default: clients/node/src/gen).
# `make proto` runs this after gen-proto.sh; tests/node/test_node_proto_drift.py runs it into a
# temp dir and compares. Needs clients/node/node_modules (`make node-deps`) for the ts-proto
# plugin. Never edit the generated files by hand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/clients/node/src/gen}"
plugin="$root/clients/node/node_modules/.bin/protoc-gen-ts_proto"
if [[ ! -x "$plugin" ]]; then
  echo "gen-proto-node: $plugin is missing: run \`make node-deps\` (npm ci in clients/node)" >&2
  exit 1
fi
# Options (ts-proto's README): grpc-js service definitions, ESM imports with .js suffixes,
# uint64 as bigint (Consul indexes are 64-bit), Timestamp as Date, oneofs as tagged unions.
opts="outputServices=grpc-js,esModuleInterop=true,importSuffix=.js,forceLong=bigint,useDate=true"
opts+=",oneof=unions-value,env=node,outputJsonMethods=false,outputPartialMethods=true"
opts+=",useOptionals=none,exportCommonSymbols=false,outputTypeRegistry=false"
rm -rf "$out"
mkdir -p "$out"
cd "$root/proto"
"$root/.venv/bin/python" -m grpc_tools.protoc -I . \
  --plugin=protoc-gen-ts_proto="$plugin" \
  --ts_proto_out="$out" --ts_proto_opt="$opts" \
  latchkey/v1/*.proto
