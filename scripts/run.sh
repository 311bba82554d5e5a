#!/usr/bin/env bash
# Builds and starts the embedded Runnel server (coordinator and worker in
# one process; pgwire on 127.0.0.1:4577, HTTP on 8081, data under
# ./runnel-data). Installs the build prerequisites first on a fresh Debian
# machine. Arguments go to `runnel` (`scripts/run.sh --help` lists them).
# Builds go to $CARGO_TARGET_DIR, by default ~/.cache/runnel-target.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/prepare.sh
. scripts/prepare.sh
apt_install
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/runnel-target}"
exec cargo run --release --bin runnel -- "$@"
