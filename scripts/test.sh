#!/usr/bin/env bash
# Runs every test of Runnel on a fresh Debian machine: installs what the
# tests need (system packages, Python client packages), builds, then runs the
# unit and integration tests, the sqllogictest suite and the client tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/runnel-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need_apt=()
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v clang >/dev/null || need_apt+=(clang)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
[ -e /usr/share/java/postgresql.jar ] || need_apt+=(libpostgresql-jdbc-java)
command -v java >/dev/null || need_apt+=(default-jre-headless)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

VENV="$HOME/.cache/runnel-venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import psycopg' 2>/dev/null || "$VENV/bin/pip" install -q 'psycopg[binary]>=3.1'
# moto in server mode: the S3-compatible server the checkpoint tests use.
[ -x "$VENV/bin/moto_server" ] || "$VENV/bin/pip" install -q 'moto[server]>=5'

echo "== build"
cargo build --workspace --all-targets

echo "== unit and integration tests"
cargo test --workspace

echo "== sqllogictest"
"$CARGO_TARGET_DIR/debug/runnel-sql-tests"

echo "== client tests (psql, psycopg, pgjdbc)"
RUNNEL_BIN="$CARGO_TARGET_DIR/debug/runnel" "$VENV/bin/python" sql-tests/clients/run_clients.py
