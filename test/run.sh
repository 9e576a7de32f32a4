#!/usr/bin/env bash
# Runs the whole test suite, installing whatever the tests need first.
# Usage (as root, from anywhere): bash test/run.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# Debian packages the test tiers use.
packages=(iproute2 procps)
path_line=$(bash src/setup/ensure-deps.sh "${packages[@]}" | tail -n 1)
export "${path_line?}"
exec npm test
