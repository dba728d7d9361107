#!/usr/bin/env bash
# Make sure h2load (the C HTTP/2 and HTTP/1.1 load generator from nghttp2) is installed: the
# bench drives the gateway (gRPC over HTTP/2) and OpenBao Proxy (HTTP/1.1) with it. When it is
# missing and we are root, install Debian's `nghttp2-client` package; otherwise say how to get it.
set -euo pipefail

have_h2load() {
  [ -n "${LATCHKEY_H2LOAD_BIN:-}" ] && [ -x "$LATCHKEY_H2LOAD_BIN" ] && return 0
  command -v h2load >/dev/null 2>&1
}

have_h2load && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-h2load: installing Debian's nghttp2-client package (h2load)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >&2
  have_h2load && exit 0
fi
cat >&2 <<MSG
ensure-h2load: h2load not found; the bench needs it to load the gateway and OpenBao Proxy.
Install it (Debian/Ubuntu: sudo apt-get install nghttp2-client; macOS: brew install nghttp2)
or set LATCHKEY_H2LOAD_BIN to the h2load binary.
MSG
exit 1
