#!/usr/bin/env bash
# Provision the real `consul` binary (Consul 1.8.7 from Debian bullseye) into .cache/consul/.
#
# Order of preference:
#   1. $LATCHKEY_CONSUL_BIN, if set;
#   2. a `consul` already on PATH;
#   3. a previously extracted binary in .cache/consul/;
#   4. Debian's `consul` package, fetched with apt using a private sources list, state and
#      archive directory (the system's apt configuration is never edited), unpacked with dpkg -x.
#
# Prints the absolute path of a working consul binary on stdout; everything else goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/consul"
extracted="$cache/root/usr/bin/consul"

check() {
  local bin="$1"
  if "$bin" version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
  fi
  echo "provision-consul: '$bin' exists but 'consul version' failed" >&2
  return 1
}

if [ -n "${LATCHKEY_CONSUL_BIN:-}" ]; then
  check "$LATCHKEY_CONSUL_BIN" || exit 1
fi
if command -v consul >/dev/null 2>&1; then
  check "$(command -v consul)" || true
fi
if [ -x "$extracted" ]; then
  check "$extracted" || true
fi

fail() {
  cat >&2 <<MSG
provision-consul: could not obtain a consul binary: $1
Fix one of:
  - install Consul (https://developer.hashicorp.com/consul/install) and put it on PATH, or
  - set LATCHKEY_CONSUL_BIN=/path/to/consul, or
  - make Debian's package archive reachable to apt (this script uses the mirror named in the
    system's apt sources, suite 'bullseye', package 'consul').
MSG
  exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "apt-get is not available on this machine"
command -v dpkg >/dev/null 2>&1 || fail "dpkg is not available on this machine"

# The mirror: whatever the system's own Debian sources point at (deb822 or one-line format).
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' "$f")
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ]; then
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f")
    [ -n "$mirror" ] && break
  done
fi
[ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list*"

apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bullseye main" >"$apt_dir/sources.list"
opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache::Archives=$apt_dir/archives"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
say() { echo "provision-consul: $*" >&2; }
say "fetching Debian's consul package (bullseye) with a private apt state in $apt_dir"
say "  1/3 updating the private package lists (about 8 MB)"
apt-get "${opts[@]}" -q update >&2 || fail "apt-get update with the private sources list failed"
# A .deb left by an interrupted download may be partial: always fetch it afresh.
rm -f "$apt_dir"/archives/consul_*.deb
say "  2/3 downloading the consul package (about 14 MB)"
(cd "$apt_dir/archives" && apt-get "${opts[@]}" -q download consul >&2) || fail "apt-get download consul failed"
deb=$(ls -1t "$apt_dir"/archives/consul_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "no consul .deb was downloaded"
say "  3/3 unpacking $(basename "$deb")"
# Unpack beside the final place, then move it in: an interrupted unpack never looks finished.
rm -rf "$cache/root" "$cache/root.partial"
dpkg -x "$deb" "$cache/root.partial"
mv "$cache/root.partial" "$cache/root"
[ -x "$extracted" ] || fail "the package did not contain usr/bin/consul"
check "$extracted" || fail "the extracted binary does not run"
