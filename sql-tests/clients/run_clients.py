"""Client tests: psql's meta-commands and psycopg 3 (text and binary,
prepared statements) against a real runnel process.

Runs as a script: starts `runnel` ($RUNNEL_BIN) on free ports with a
temporary data directory, runs every test_* function, prints
'N passed, N failed' and exits non-zero on failure.
"""

import datetime as dt
import decimal
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import psycopg
from psycopg.types.json import Json, Jsonb

from differential import *  # noqa: F401,F403 (its test_* functions run here too)
from differential import stop_reference
from orm import *  # noqa: F401,F403 (SQLAlchemy's tests)
from psql_catalog import *  # noqa: F401,F403 (psql describe commands)
from migrations import *  # noqa: F401,F403 (migration tools)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        # A port free a moment ago may be taken when runnel binds it: retry.
        for _ in range(5):
            if self._start():
                return
        raise RuntimeError("runnel exited during start-up five times")

    def _start(self):
        self.port = free_port()
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(
            [os.environ["RUNNEL_BIN"], "--data-dir", os.path.join(self.dir.name, "data"),
             "--pgwire-port", str(self.port), "--web-port", str(free_port())],
            env=env, stdin=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                if self.proc.poll() is not None:
                    return False
                time.sleep(0.05)
        raise RuntimeError("runnel did not start within 60 s")

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} user=runnel dbname=runnel"

    def psql(self, *args):
        out = subprocess.run(
            ["psql", "-X", "-h", "127.0.0.1", "-p", str(self.port), "-U", "runnel", "runnel", *args],
            capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise AssertionError(f"psql {args} failed: {out.stderr}")
        return out.stdout

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()


def test_psql_meta_commands(server):
    server.psql("-c", "CREATE SCHEMA app; CREATE TABLE app.users (id bigint PRIMARY KEY, name text NOT NULL, born date);"
                "CREATE TABLE notes (body text); CREATE VIEW app.names AS SELECT name FROM app.users")
    dt_out = server.psql("-c", "\\dt")
    assert "notes" in dt_out and "table" in dt_out, dt_out
    dt_app = server.psql("-c", "\\dt app.*")
    assert "users" in dt_app, dt_app
    d_out = server.psql("-c", "\\d app.users")
    for expected in ["id", "bigint", "not null", "name", "text", "born", "date"]:
        assert expected in d_out, d_out
    dv = server.psql("-c", "\\dv app.*")
    assert "names" in dv and "view" in dv, dv
    dn = server.psql("-c", "\\dn")
    assert "app" in dn and "public" in dn, dn
    l_out = server.psql("-c", "\\l")
    assert "runnel" in l_out, l_out
    server.psql("-c", "CREATE MATERIALIZED VIEW app.name_counts AS SELECT name, count(*) AS n FROM app.users GROUP BY name")
    dm = server.psql("-c", "\\dm app.*")
    assert "name_counts" in dm and "materialized view" in dm, dm
    dt_again = server.psql("-c", "\\dt app.*")
    assert "name_counts" not in dt_again, dt_again
    d_mv = server.psql("-c", "\\d app.name_counts")
    assert "Materialized view" in d_mv and "bigint" in d_mv, d_mv


def test_psql_copy(server):
    """psql's \\copy both ways, and COPY FROM STDIN inline in a script."""
    data = "1\tone\n2\t\\N\n3\tthree \\t tab\n"
    with tempfile.TemporaryDirectory() as tmp:
        source, back, script = (os.path.join(tmp, n) for n in ("in.txt", "out.txt", "script.sql"))
        with open(source, "w") as f:
            f.write(data)
        with open(script, "w") as f:
            f.write("COPY psql_copy FROM STDIN;\n4\tfour\n\\.\n")
        server.psql("-c", "CREATE TABLE psql_copy (id int PRIMARY KEY, name text)")
        out = server.psql("-c", f"\\copy psql_copy from '{source}'")
        assert "COPY 3" in out, out
        server.psql("-v", "ON_ERROR_STOP=1", "-f", script)
        server.psql("-c", f"\\copy (SELECT * FROM psql_copy WHERE id < 4 ORDER BY id) to '{back}'")
        with open(back) as f:
            assert f.read() == data
        assert server.psql("-A", "-t", "-c", "SELECT name FROM psql_copy WHERE id = 4").strip() == "four"


def test_psycopg_every_type_text_and_binary(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("""CREATE TABLE py_types (id int PRIMARY KEY, b boolean, i2 smallint, i8 bigint,
            f4 real, f8 double precision, n numeric(10,4), t text, by bytea, d date, tm time,
            ts timestamp, tz timestamptz, iv interval, j json, jb jsonb)""")
        values = (
            True, 7, 9_000_000_000, 1.5, 2.25, decimal.Decimal("12.3456"), "héllo", b"\x00\xff",
            dt.date(2020, 2, 29), dt.time(12, 34, 56, 789000), dt.datetime(2021, 3, 4, 5, 6, 7, 8),
            dt.datetime(2022, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), dt.timedelta(days=3, seconds=7200),
        )
        document = {"a": [1, 2], "b": None}
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                for i in range(6):  # past pgjdbc's switch to server-prepared statements
                    key = i + (100 if binary else 0)
                    cur.execute(
                        "INSERT INTO py_types VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (key, *values, Json(document), Jsonb(document)), prepare=True)
                cur.execute("SELECT * FROM py_types WHERE id = %s", (100 if binary else 0,), prepare=True)
                row = cur.fetchone()
                assert row[1:14] == values, (binary, row)
                assert row[14] == document and row[15] == document, (binary, row)
                types = [c.type_code for c in cur.description]
                assert types == [23, 16, 21, 20, 700, 701, 1700, 25, 17, 1082, 1083, 1114, 1184, 1186, 114, 3802], types
        count = conn.execute("SELECT count(*) FROM py_types").fetchone()[0]
        assert count == 12, count


def test_psycopg_errors_keep_the_session(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for sql, code in [("SELEC 1", "42601"), ("SELECT * FROM nowhere", "42P01"), ("SELECT 1/0", "22012")]:
            try:
                conn.execute(sql)
                raise AssertionError(f"{sql} succeeded")
            except psycopg.Error as e:
                assert e.sqlstate == code, (sql, e.sqlstate, str(e))
            assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_psycopg_transactions_are_accepted(server):
    with psycopg.connect(server.dsn()) as conn:  # psycopg opens a block per transaction
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE py_tx (a int)")
            cur.execute("INSERT INTO py_tx VALUES (1), (2)")
        conn.commit()
        assert conn.execute("SELECT sum(a) FROM py_tx").fetchone()[0] == 3
        conn.rollback()


JDBC_JAR = "/usr/share/java/postgresql.jar"


def test_wordcount_example(server):
    """examples/wordcount as the README runs it: psql -f over a text file."""
    server.psql("-v", "ON_ERROR_STOP=1", "-f", "examples/wordcount/wordcount.sql")
    import collections
    import re
    with open("examples/wordcount/input.txt") as f:
        words = re.sub(r"[^a-z']+", " ", f.read().lower()).split(" ")
    expected = sorted(collections.Counter(w for w in words if w).items())
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        wait_for(lambda: sorted(conn.execute("SELECT word, n FROM word_counts").fetchall()), expected)


def test_socket_window_wordcount_example(server):
    """examples/socket_window_wordcount against a text server standing in
    for `nc -lk 9999`: a window's counts appear once a later line closes it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    with open("examples/socket_window_wordcount/socket_window_wordcount.sql") as f:
        sql = f.read().replace("'9999'", f"'{port}'")
    statements = [s for s in sql.split(";") if s.strip() and not all(
        l.startswith("--") or not l.strip() for l in s.strip().splitlines())]
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(statements[0])  # CREATE SOURCE connects (and leaves)
        probe, _ = listener.accept()
        probe.close()
        conn.execute(statements[1])  # the job connects again
        client, _ = listener.accept()
        client.sendall(b"Hello world hello\n")
        time.sleep(5.5)  # past the end of the first line's 5-second window
        client.sendall(b"bye\n")
        wait_for(lambda: sorted(conn.execute("SELECT word, n FROM window_word_counts").fetchall()),
                 [("hello", 2), ("world", 1)])
        client.close()
    listener.close()


def test_jdbc(server):
    out = subprocess.run(
        ["java", "-cp", JDBC_JAR, os.path.join(os.path.dirname(__file__), "JdbcTest.java"), str(server.port)],
        capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "jdbc: ok" in out.stdout, out.stdout + out.stderr


def test_jdbc_metadata_as_postgres(server):
    """pgjdbc's DatabaseMetaData (tables, columns, primary keys, index info,
    imported keys, schemas, type info, functions) over the same schema on
    Runnel and on PostgreSQL 15 print the same lines."""
    from differential import reference
    program = os.path.join(os.path.dirname(__file__), "JdbcMetadata.java")
    outputs = []
    for port in (server.port, reference().port):
        out = subprocess.run(["java", "-cp", JDBC_JAR, program, str(port)],
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        outputs.append(out.stdout)
    assert outputs[0] == outputs[1], f"runnel:\n{outputs[0]}\npostgres:\n{outputs[1]}"


def main():
    server = Server()
    passed = failed = 0
    try:
        # Optional arguments pick the tests whose names contain one of them.
        wanted = sys.argv[1:]
        for name, fn in sorted(globals().items()):
            if name.startswith("test_") and callable(fn) and (not wanted or any(w in name for w in wanted)):
                try:
                    fn(server)
                    passed += 1
                    print(f"ok      {name}")
                except Exception:
                    failed += 1
                    print(f"FAILED  {name}")
                    traceback.print_exc()
    finally:
        server.stop()
        stop_reference()
    print(f"clients: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
