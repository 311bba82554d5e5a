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
# bindgen (librocksdb-sys) loads libclang itself; libclang-cpp does not count.
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
[ -e /usr/share/java/postgresql.jar ] || need_apt+=(libpostgresql-jdbc-java)
command -v java >/dev/null || need_apt+=(default-jre-headless)
# librdkafka (built by rdkafka-sys): make, TLS and zlib headers.
command -v make >/dev/null || need_apt+=(make)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
[ -e /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
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
# confluent-kafka (a current librdkafka): the outside Kafka client of the tests.
"$VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null || "$VENV/bin/pip" install -q 'confluent-kafka>=2.10'
# fastavro: the outside Avro encoder of the Avro source tests.
"$VENV/bin/python" -c 'import fastavro' 2>/dev/null || "$VENV/bin/pip" install -q 'fastavro>=1.9'

# tansu: the Kafka-protocol broker the connector tests start (~9 min to build
# once; its own target directory so it stays apart from Runnel's).
TANSU="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
if [ ! -x "$TANSU" ]; then
  echo "== installing tansu"
  CARGO_TARGET_DIR="$HOME/.cache/tansu-target" cargo install --locked -q tansu --features dynostore,libsql
fi

echo "== build"
cargo build --workspace --all-targets

echo "== unit and integration tests"
cargo test --workspace

echo "== sqllogictest"
"$CARGO_TARGET_DIR/debug/runnel-sql-tests"

echo "== client tests (psql, psycopg, pgjdbc)"
RUNNEL_BIN="$CARGO_TARGET_DIR/debug/runnel" "$VENV/bin/python" sql-tests/clients/run_clients.py
