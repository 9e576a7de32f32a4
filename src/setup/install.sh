#!/usr/bin/env bash
# Installs docklet on this host from this checkout and starts its node:
#
#   sudo bash src/setup/install.sh [--data-dir D] [--listen ADDR] [--advertise ADDR] [--portal ADDR]
#
# 1. dependencies (src/setup/ensure-deps.sh: Node >= 22, npm packages) and
#    the portal's browser app (ui/dist, as `npm run build:ui` builds it);
# 2. /usr/local/bin/docklet, a small wrapper that runs this checkout's CLI
#    with the right node;
# 3. the systemd unit docklet.service (from src/setup/docklet.service);
# 4. if the data dir holds no node yet: `docklet init` (a new one-node
#    cluster; the admin password is printed once), then the node is started:
#    by systemd when it is PID 1, else detached (containers, CI);
#    if it does: the node is (re)started;
# 5. `docklet status`.
#
# Idempotent: running it again on an installed host updates the wrapper and
# the unit and (re)starts the node. To join an existing cluster instead of
# founding one, install with --no-init and then run `docklet join`.
#
# For tests and packagers: DOCKLET_BIN (wrapper path), DOCKLET_SYSTEMD_DIR
# (unit directory), DOCKLET_NODE_PREFIX (as in ensure-deps.sh),
# DOCKLET_SKIP_DEPS=1 (use the node on PATH and the installed node_modules).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${DOCKLET_BIN:-/usr/local/bin/docklet}
systemd_dir=${DOCKLET_SYSTEMD_DIR:-/etc/systemd/system}
node_prefix=${DOCKLET_NODE_PREFIX:-/opt/docklet/node}
data_dir=/var/lib/docklet
node_flags=()
do_init=1

log() { printf '[install] %s\n' "$*" >&2; }
usage() {
  echo 'Usage: sudo bash src/setup/install.sh [--data-dir D] [--listen ADDR] [--advertise ADDR] [--portal ADDR] [--no-init]'
}
fail() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir | --listen | --advertise | --portal)
      [ $# -ge 2 ] || { printf 'install.sh: %s needs a value.\n' "$1" >&2; usage >&2; exit 2; }
      if [ "$1" = --data-dir ]; then data_dir=$2; else node_flags+=("$1" "$2"); fi
      shift 2
      ;;
    --data-dir=*) data_dir=${1#*=}; shift ;;
    --listen=* | --advertise=* | --portal=*) node_flags+=("$1"); shift ;;
    --no-init) do_init=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) printf 'install.sh: unknown option %s.\n' "$1" >&2; usage >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs packages, $bin and a systemd unit); try: sudo bash $0 $*"
case "$data_dir" in
  /*) ;;
  *) data_dir="$(pwd)/$data_dir" ;;
esac
case "$data_dir" in
  *[[:space:]]*) fail "the data dir \"$data_dir\" contains white space, which the systemd unit cannot carry; pick another." ;;
esac

# 1. Dependencies. ensure-deps prints the PATH to use on its last line.
# What a node runs: LXC system containers on overlayfs with loop-mounted ext4
# upper layers, the busybox and Debian (debootstrap) images it builds at init,
# the WireGuard mesh (wireguard-go where the kernel has no module) and
# nftables for vcluster isolation and NAT.
packages=(
  iproute2 procps util-linux mount tar e2fsprogs
  lxc busybox-static debootstrap
  wireguard-go wireguard-tools nftables
)
if [ "${DOCKLET_SKIP_DEPS:-0}" != 1 ]; then
  deps_path=$(bash "$root/src/setup/ensure-deps.sh" "${packages[@]}" | tail -n 1)
  case "$deps_path" in
    PATH=*) export PATH="${deps_path#PATH=}" ;;
    *) fail "src/setup/ensure-deps.sh did not report a PATH; see its messages above." ;;
  esac
fi
node_bin=$(command -v node) || fail 'no node on PATH after installing the dependencies.'
node_major=$("$node_bin" -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 22 ] || fail "$node_bin is Node $("$node_bin" --version); docklet needs Node 22 or newer (run src/setup/ensure-deps.sh)."

# The browser app (ui/ -> ui/dist), which the node serves at / on its portal.
log 'building the portal (npm run build:ui)'
(cd "$root" && "$node_bin" ui/build.ts >&2) || fail 'building the portal failed (see above); the node would serve only the API. Fix it and run this again.'

# 2. The wrapper: the node from $node_prefix if present (ensure-deps puts Node
# 24 there when the system's is too old), else the one found now, else `node`.
log "installing $bin (runs $root/bin/docklet.js)"
mkdir -p "$(dirname "$bin")"
cat >"$bin.tmp.$$" <<WRAPPER
#!/bin/sh
# Installed by $root/src/setup/install.sh: the docklet CLI of that checkout.
cli='$root/bin/docklet.js'
if [ -x '$node_prefix/bin/node' ]; then exec '$node_prefix/bin/node' "\$cli" "\$@"; fi
if [ -x '$node_bin' ]; then exec '$node_bin' "\$cli" "\$@"; fi
exec node "\$cli" "\$@"
WRAPPER
chmod 0755 "$bin.tmp.$$"
mv -f "$bin.tmp.$$" "$bin"

# 3. The systemd unit (installed even where systemd is not running, for an image that boots later).
unit="$systemd_dir/docklet.service"
log "installing $unit"
mkdir -p "$systemd_dir"
sed -e "s|@DOCKLET_BIN@|$bin|g" -e "s|@DATA_DIR@|$data_dir|g" "$root/src/setup/docklet.service" >"$unit.tmp.$$"
mv -f "$unit.tmp.$$" "$unit"

have_systemd=0
[ -d /run/systemd/system ] && have_systemd=1

node_answers() { "$bin" status --data-dir "$data_dir" >/dev/null 2>&1; }

# 4. Initialize (once) and start.
if [ -f "$data_dir/node.json" ]; then
  [ "${#node_flags[@]}" -eq 0 ] || log "$data_dir is already initialized: ignoring ${node_flags[*]} (they were fixed by init/join)"
  if [ "$have_systemd" = 1 ]; then
    log 'restarting docklet.service'
    systemctl daemon-reload
    systemctl enable docklet.service >/dev/null 2>&1
    systemctl restart docklet.service
  elif node_answers; then
    log "the docklet node of $data_dir is already running (no systemd here: restart it by stopping the pid in $data_dir/docklet.pid and running \`docklet start --detach\`)"
  else
    "$bin" start --data-dir "$data_dir" --detach
  fi
elif [ "$do_init" = 0 ]; then
  log "installed; $data_dir holds no node yet. Join a cluster with: docklet join <peer-address> --token T --data-dir $data_dir"
  exit 0
elif [ "$have_systemd" = 1 ]; then
  "$bin" init --data-dir "$data_dir" "${node_flags[@]}" --no-start
  log 'starting docklet.service'
  systemctl daemon-reload
  systemctl enable --now docklet.service
else
  log 'systemd is not running here: starting the node detached'
  "$bin" init --data-dir "$data_dir" "${node_flags[@]}" --detach
fi

# 5. Wait for the node to answer (systemd returns before it does), then show the cluster.
for _ in $(seq 1 150); do
  node_answers && break
  sleep 0.2
done
"$bin" status --data-dir "$data_dir"
