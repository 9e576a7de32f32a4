#!/usr/bin/env bash
# Installs what docklet needs on a Debian 12 host, and only what is missing:
# Debian packages (given as arguments), Node >= 22 (Node 24 from the npm
# registry when the host's node is older), and the project's npm packages.
# Idempotent; safe to run again. Prints the PATH to use on its last line
# ("PATH=..."), so callers can `eval` it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
node_prefix=${DOCKLET_NODE_PREFIX:-/opt/docklet/node}

log() { printf '[ensure-deps] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it installs Debian packages); try: sudo $0 $*"
  exit 1
fi

# 1. Debian packages.
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
# A node is good enough when it is 22 or newer (libp2p 3 needs Promise.withResolvers)
# and has crypto.argon2 (Node 24.7+), which docklet hashes passwords with.
node_ok() { "$1" -e 'const [a]=process.versions.node.split(".").map(Number);process.exit(a>=22&&typeof require("crypto").argon2==="function"?0:1)' 2>/dev/null; }
if ! command -v node >/dev/null 2>&1 && [ ! -x "$node_prefix/bin/node" ]; then
  missing+=(nodejs npm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# 2. Node 24 unless the host already has a new enough one.
if [ -x "$node_prefix/bin/node" ] && node_ok "$node_prefix/bin/node"; then
  export PATH="$node_prefix/bin:$PATH"
elif ! node_ok node; then
  log "node $(node --version 2>/dev/null || echo none) is older than 24.7 (docklet needs Node >= 22 and crypto.argon2): installing Node 24 into $node_prefix"
  npm install -g --prefix "$node_prefix" node@24 >&2
  export PATH="$node_prefix/bin:$PATH"
fi
log "using node $(node --version) at $(command -v node)"

# 3. npm packages, exactly as locked.
cd "$root"
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.docklet-lock-stamp; then
  log "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund >&2
  cp package-lock.json node_modules/.docklet-lock-stamp
fi

echo "PATH=$PATH"
