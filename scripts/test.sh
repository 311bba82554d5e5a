#!/usr/bin/env bash
# Runs every test of Runnel on a fresh Debian machine: installs what the
# tests need (system packages, Python client packages), builds, then runs the
# unit and integration tests, the sqllogictest suite and the client tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/runnel-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The run command's build prerequisites (scripts/prepare.sh), then what
# only the tests need.
. scripts/prepare.sh
test_apt=()
command -v psql >/dev/null || test_apt+=(postgresql-client)
python3 -m venv --help >/dev/null 2>&1 || test_apt+=(python3-venv)
[ -e /usr/share/java/postgresql.jar ] || test_apt+=(libpostgresql-jdbc-java)
command -v java >/dev/null || test_apt+=(default-jre-headless)
# A real PostgreSQL server (15 on Debian 12) for the differential client tests.
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || test_apt+=(postgresql)
# Node.js and npm: node-pg-migrate and dbmate, the migration tools tested
# beside Alembic.
command -v npm >/dev/null || test_apt+=(npm)
apt_install "${test_apt[@]}"

VENV="$HOME/.cache/runnel-venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import psycopg' 2>/dev/null || "$VENV/bin/pip" install -q 'psycopg[binary]>=3.1'
# psycopg2 and SQLAlchemy 2: the ORM and second driver of the client tests.
"$VENV/bin/python" -c 'import psycopg2, sqlalchemy; assert sqlalchemy.__version__ >= "2"' 2>/dev/null \
  || "$VENV/bin/pip" install -q 'psycopg2-binary>=2.9' 'SQLAlchemy>=2.0,<2.1'
# Alembic: the migration tool of the migration tests.
"$VENV/bin/python" -c 'import alembic' 2>/dev/null || "$VENV/bin/pip" install -q 'alembic>=1.13'
# dbmate (a Go binary shipped through npm) and node-pg-migrate with its
# driver: the other two migration tools of the client tests (node-pg-migrate
# 7 still runs on Debian 12's Node.js 18).
NPM_DIR="$HOME/.cache/runnel-npm"
[ -x "$NPM_DIR/node_modules/.bin/dbmate" ] && [ -x "$NPM_DIR/node_modules/.bin/node-pg-migrate" ] \
  || { mkdir -p "$NPM_DIR" && npm install --prefix "$NPM_DIR" --no-audit --no-fund -q \
         'dbmate@^2' 'node-pg-migrate@^7' 'pg@^8'; }
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
