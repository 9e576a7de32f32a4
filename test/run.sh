#!/usr/bin/env bash
# Runs the whole test suite, installing whatever the tests need first.
# Usage (as root, from anywhere): bash test/run.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# Debian packages the test tiers use: real LXC containers on overlayfs with
# loop-mounted ext4 upper layers (runtime), WireGuard (wireguard-go where the
# kernel has no module) and nftables between network-namespace hosts (mesh),
# chromium for the browser tests (driven by playwright-core, never downloaded),
# debootstrap for the Debian+Jupyter image (built once into /var/cache/docklet-test).
packages=(
  iproute2 procps util-linux mount tar e2fsprogs iputils-ping
  lxc busybox-static debootstrap
  wireguard-go wireguard-tools nftables
  chromium
)
path_line=$(bash src/setup/ensure-deps.sh "${packages[@]}" | tail -n 1)
export "${path_line?}"
exec npm test
