"""Differential tests: the same statements against Runnel and against a
real PostgreSQL 15 (reference_pg.py); the column names, command tags and
rows each answers must match."""

import random
import time

import psycopg

from reference_pg import ReferencePostgres

_reference = None


def reference():
    """The shared PostgreSQL 15 server, started on first use."""
    global _reference
    if _reference is None:
        _reference = ReferencePostgres()
    return _reference


def stop_reference():
    global _reference
    if _reference is not None:
        _reference.stop()
        _reference = None


def answer(dsn, sql):
    """(column names, rows as text or None) of `sql`, or its SQLSTATE."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor() as cur:
            try:
                cur.execute(sql)
            except psycopg.Error as e:
                return ("error", e.sqlstate)
            if cur.description is None:
                return ("tag", cur.statusmessage)
            names = [c.name for c in cur.description]
            return (names, cur.fetchall())


def assert_same(server, statements, rows=True):
    """Runs each statement on both servers; names (and rows when `rows`)
    must be equal."""
    differences = []
    for sql in statements:
        ours = answer(server.dsn(), sql)
        theirs = answer(reference().dsn(), sql)
        if not rows and isinstance(ours[0], list) and isinstance(theirs[0], list):
            ours, theirs = ours[0], theirs[0]
        if ours != theirs:
            differences.append(f"{sql}\n  runnel:   {ours}\n  postgres: {theirs}")
    assert not differences, "\n".join(differences)


def test_output_column_names_as_postgres(server):
    assert_same(server, [
        "SELECT 1, 1",
        "SELECT current_user, session_user",
        "SELECT 1 + 1, abs(-1), upper('a'), 'a'::text, CAST(1 AS bigint), CASE WHEN true THEN 1 END",
        "SELECT x, x::text, v.x, count(*), max(x), coalesce(x, 0) FROM (VALUES (1)) v(x) GROUP BY x",
        "SELECT (SELECT 2 AS two), ARRAY[1, 2]",
        "SELECT 1 AS a, 2 AS a",
        "SELECT * FROM (SELECT 1, 2) s",
        "SELECT 1 UNION SELECT 2 ORDER BY 1",
        "SELECT extract(year FROM date '2024-05-01'), substring('abc' FROM 2), trim(' a ')",
    ], rows=False)
    for sql in ["CREATE VIEW dup_names AS SELECT 1, 1", "CREATE VIEW dup_names AS SELECT 1 AS a, 2 AS a"]:
        assert answer(server.dsn(), sql) == answer(reference().dsn(), sql) == ("error", "42701"), sql


def transaction_script(dsn, table):
    """Blocks that commit, roll back, fail and recover at savepoints; returns
    what a second session saw along the way and the table at the end."""
    seen = []
    with psycopg.connect(dsn, autocommit=True) as other, psycopg.connect(dsn) as conn:
        other.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        rows = lambda c: c.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()  # noqa: E731
        conn.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
        seen.append(("own writes", rows(conn)))
        seen.append(("others before commit", rows(other)))
        conn.commit()
        seen.append(("others after commit", rows(other)))
        conn.execute(f"UPDATE {table} SET v = 'changed' WHERE id = 1")
        conn.execute(f"DELETE FROM {table} WHERE id = 2")
        conn.rollback()
        seen.append(("after rollback", rows(other)))
        with conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (3, 'c')")
            try:
                with conn.transaction():  # a savepoint
                    conn.execute(f"INSERT INTO {table} VALUES (4, 'd')")
                    conn.execute(f"INSERT INTO {table} VALUES (4, 'duplicate')")
            except psycopg.errors.UniqueViolation:
                seen.append(("rolled back to savepoint", rows(conn)))
            with conn.transaction():
                conn.execute(f"UPDATE {table} SET v = v || '!' WHERE id >= 2")
        seen.append(("end", rows(other)))
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"INSERT INTO {table} VALUES (5, 'e')")
            try:
                cur.execute("SELECT 1/0")
            except psycopg.errors.DivisionByZero:
                pass
            try:
                cur.execute(f"SELECT * FROM {table}")
            except psycopg.errors.InFailedSqlTransaction:
                seen.append(("failed block", "25P02"))
            conn.rollback()
        seen.append(("after failed block", rows(other)))
    return seen


def test_transactions_as_postgres(server):
    ours = transaction_script(server.dsn(), "tx_script")
    theirs = transaction_script(reference().dsn(), "tx_script")
    assert ours == theirs, f"\n  runnel:   {ours}\n  postgres: {theirs}"


def test_transactions_conflict_and_read_only(server):
    with psycopg.connect(server.dsn(), autocommit=True) as other, psycopg.connect(server.dsn()) as conn:
        other.execute("CREATE TABLE tx_conflict (id int PRIMARY KEY, n int)")
        other.execute("INSERT INTO tx_conflict VALUES (1, 0), (2, 0)")
        other.execute("CREATE MATERIALIZED VIEW tx_total AS SELECT sum(n) AS total, count(*) AS rows FROM tx_conflict")
        # Another session changes a row this block changed first: COMMIT fails.
        conn.execute("UPDATE tx_conflict SET n = n + 1 WHERE id = 1")
        other.execute("UPDATE tx_conflict SET n = n + 10 WHERE id = 1")
        try:
            conn.commit()
            raise AssertionError("commit over a concurrent update succeeded")
        except psycopg.errors.SerializationFailure:
            conn.rollback()
        # ... or inserts the key this block inserted.
        conn.execute("INSERT INTO tx_conflict VALUES (3, 1)")
        other.execute("INSERT INTO tx_conflict VALUES (3, 100)")
        try:
            conn.commit()
            raise AssertionError("commit over a concurrent insert succeeded")
        except psycopg.errors.UniqueViolation:
            conn.rollback()
        assert other.execute("SELECT id, n FROM tx_conflict ORDER BY id").fetchall() == [(1, 10), (2, 0), (3, 100)]
        # A committed block reaches the view as a whole.
        conn.execute("UPDATE tx_conflict SET n = n + 5")
        conn.execute("DELETE FROM tx_conflict WHERE id = 2")
        conn.commit()
        wait_for(lambda: other.execute("SELECT total, rows FROM tx_total").fetchone(), (120, 2))
        conn.read_only = True
        try:
            conn.execute("INSERT INTO tx_conflict VALUES (9, 9)")
            raise AssertionError("insert in a read-only block succeeded")
        except psycopg.errors.ReadOnlySqlTransaction:
            conn.rollback()
        conn.read_only = False
        for level in ("REPEATABLE READ", "SERIALIZABLE"):
            try:
                conn.execute(f"SET TRANSACTION ISOLATION LEVEL {level}")
                raise AssertionError(f"{level} accepted")
            except psycopg.errors.FeatureNotSupported:
                conn.rollback()


def migration_script(dsn):
    """A schema migration as tools run one: DDL and DML in one block; a
    failing one, one undone to a savepoint, then the same run again.
    Returns what a second session saw along the way."""
    seen = []

    def probe(conn, sql):
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        except psycopg.Error as e:
            return e.sqlstate

    with psycopg.connect(dsn, autocommit=True) as other, psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE mig_version (version text PRIMARY KEY)")
        conn.execute("CREATE TABLE mig_users (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO mig_users (name) VALUES ('ann'), ('bob')")
        conn.execute("CREATE VIEW mig_names AS SELECT name FROM mig_users")
        conn.execute("INSERT INTO mig_version VALUES ('1')")
        seen.append(("others before commit", probe(other, "SELECT * FROM mig_users")))
        seen.append(("own view", probe(conn, "SELECT * FROM mig_names ORDER BY name")))
        conn.commit()
        seen.append(("others after commit", probe(other, "SELECT * FROM mig_names ORDER BY name")))

        def second_migration(fail):
            conn.execute("ALTER TABLE mig_users ADD COLUMN active boolean NOT NULL DEFAULT true")
            conn.execute("INSERT INTO mig_users (name, active) VALUES ('cat', false)")
            conn.execute("CREATE TABLE mig_posts (id bigserial PRIMARY KEY, user_id int, body text)")
            conn.execute("INSERT INTO mig_posts (user_id, body) VALUES (1, 'hello')")
            conn.execute("CREATE SEQUENCE mig_counter")
            conn.execute("DROP VIEW mig_names")
            conn.execute("ALTER TABLE mig_users RENAME COLUMN name TO full_name")
            conn.execute("ALTER TABLE mig_users ALTER COLUMN full_name TYPE varchar(40)")
            conn.execute("ALTER TABLE mig_posts DROP COLUMN user_id")
            conn.execute("INSERT INTO mig_posts (body) VALUES ('second')")
            conn.execute("UPDATE mig_version SET version = '2'")
            seen.append(("inside", probe(conn, "SELECT * FROM mig_users ORDER BY id")))
            seen.append(("others inside", probe(other, "SELECT * FROM mig_posts")))
            if fail:
                conn.execute("SELECT 1/0")

        try:
            second_migration(fail=True)
        except psycopg.errors.DivisionByZero:
            conn.rollback()
        for sql in ["SELECT * FROM mig_users ORDER BY id", "SELECT * FROM mig_posts",
                    "SELECT nextval('mig_counter')", "SELECT * FROM mig_names ORDER BY name",
                    "SELECT * FROM mig_version"]:
            seen.append(("after failed", sql, probe(other, sql)))
        with conn.transaction():
            conn.execute("CREATE TABLE mig_tmp (a int)")
            try:
                with conn.transaction():  # a savepoint
                    conn.execute("CREATE TABLE mig_tmp2 (a int)")
                    conn.execute("DROP TABLE mig_tmp")
                    conn.execute("CREATE TABLE mig_tmp2 (a int)")
            except psycopg.errors.DuplicateTable:
                pass
            seen.append(("after savepoint", probe(conn, "SELECT * FROM mig_tmp"), probe(
                conn, "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'mig_tmp%'")))
            conn.execute("TRUNCATE mig_users")
            seen.append(("truncated inside", probe(conn, "SELECT count(*) FROM mig_users")))
            raise psycopg.Rollback()
        second_migration(fail=False)
        conn.commit()
        for sql in ["SELECT * FROM mig_users ORDER BY id", "SELECT * FROM mig_posts",
                    "SELECT nextval('mig_counter')", "SELECT * FROM mig_version", "SELECT * FROM mig_tmp",
                    "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'mig%' ORDER BY 1"]:
            seen.append(("after commit", sql, probe(other, sql)))
        conn.execute("DROP TABLE mig_posts")
        conn.execute("CREATE TABLE mig_posts (id int)")
        conn.rollback()
        seen.append(("drop undone", probe(other, "SELECT * FROM mig_posts")))
    return seen


def test_transactional_ddl_as_postgres(server):
    ours = migration_script(server.dsn())
    theirs = migration_script(reference().dsn())
    assert ours == theirs, "\n".join(f"runnel:   {o}\npostgres: {t}" for o, t in zip(ours, theirs) if o != t)


def test_ddl_blocks_conflict_and_refuse_jobs(server):
    """Runnel's own rules: a block's DDL loses to DDL another session
    committed meanwhile (40001); statements that start or stop jobs are
    refused inside a block (25001)."""
    with psycopg.connect(server.dsn(), autocommit=True) as other, psycopg.connect(server.dsn()) as conn:
        conn.execute("CREATE TABLE ddl_a (a int)")
        other.execute("CREATE TABLE ddl_b (b int)")
        try:
            conn.commit()
            raise AssertionError("commit after concurrent DDL succeeded")
        except psycopg.errors.SerializationFailure:
            conn.rollback()
        assert other.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'ddl_a'").fetchone() == (0,)
        # ... and to rows another session wrote into a table it rewrote.
        conn.execute("ALTER TABLE ddl_b ADD COLUMN c int NOT NULL DEFAULT 1")
        other.execute("INSERT INTO ddl_b VALUES (7)")
        try:
            conn.commit()
            raise AssertionError("commit over rows written under an ALTER succeeded")
        except psycopg.errors.SerializationFailure:
            conn.rollback()
        assert other.execute("SELECT * FROM ddl_b").fetchall() == [(7,)]
        other.execute("DELETE FROM ddl_b")
        for sql in ["CREATE MATERIALIZED VIEW ddl_mv AS SELECT count(*) FROM ddl_b",
                    "CREATE SINK ddl_sink AS SELECT * FROM ddl_b WITH (connector = 'blackhole')"]:
            try:
                conn.execute(sql)
                raise AssertionError(f"{sql} ran in a block")
            except psycopg.errors.ActiveSqlTransaction:
                conn.rollback()
        conn.autocommit = True
        conn.execute("CREATE MATERIALIZED VIEW ddl_mv AS SELECT count(*) AS n FROM ddl_b")
        conn.autocommit = False
        try:
            conn.execute("DROP TABLE ddl_b CASCADE")
            raise AssertionError("a drop that stops a job ran in a block")
        except psycopg.errors.ActiveSqlTransaction:
            conn.rollback()
        wait_for(lambda: other.execute("SELECT n FROM ddl_mv").fetchone(), (0,))


def wait_for(fetch, expected, seconds=30):
    """Polls `fetch()` until it returns `expected` (views fill as sources run)."""
    deadline = time.time() + seconds
    got = fetch()
    while got != expected and time.time() < deadline:
        time.sleep(0.2)
        got = fetch()
    assert got == expected, (got, expected)


def cursor_script(dsn, table):
    """Named (server-side) cursors, SQL PREPARE/EXECUTE and psycopg's
    statement cache across DDL (it sends DEALLOCATE ALL)."""
    seen = []
    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 25) AS s(g)")
        conn.commit()
        with conn.cursor(name="walk") as cur:
            cur.execute(f"SELECT id, v FROM {table} WHERE id > %s ORDER BY id", (3,))
            seen.append([c.name for c in cur.description])
            seen.append(cur.fetchmany(4))
            seen.append(cur.fetchone())
            seen.append(len(cur.fetchall()))
        conn.commit()
        with conn.cursor(name="kept", withhold=True) as cur:
            cur.execute(f"SELECT id FROM {table} ORDER BY id DESC")
            conn.commit()  # a WITH HOLD cursor outlives its block
            seen.append(cur.fetchmany(3))
        conn.execute(f"PREPARE pick (int) AS SELECT v FROM {table} WHERE id = $1")
        seen.append(conn.execute("EXECUTE pick(7)").fetchall())
        conn.execute("DEALLOCATE pick")
        try:
            conn.execute("EXECUTE pick(7)")
        except psycopg.errors.InvalidSqlStatementName:
            seen.append("deallocated")
        conn.rollback()
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
        for i in range(3):
            seen.append(conn.execute(f"SELECT v FROM {table} WHERE id = %s", (i + 1,)).fetchall())
        conn.execute(f"CREATE TABLE {table}_extra (a int)")  # psycopg deallocates after DDL
        conn.execute(f"DROP TABLE {table}_extra")
        seen.append(conn.execute(f"SELECT v FROM {table} WHERE id = %s", (2,)).fetchall())
        conn.execute("DEALLOCATE ALL")
    return seen


def test_cursors_and_prepared_statements_as_postgres(server):
    ours = cursor_script(server.dsn(), "cursor_script")
    theirs = cursor_script(reference().dsn(), "cursor_script")
    assert ours == theirs, f"\n  runnel:   {ours}\n  postgres: {theirs}"


def copy_script(dsn, table):
    """COPY both ways through psycopg: text, CSV and binary, with NULLs,
    escapes, quotes, a failing COPY that writes nothing, and a COPY inside
    a block that ROLLBACK undoes."""
    import datetime as dt
    import decimal
    seen = []
    rows = [
        (1, "plain", dt.datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone.utc), True,
         decimal.Decimal("1.50"), b"\x00\xff", dt.date(2024, 1, 2)),
        (2, None, None, None, None, None, None),
        (3, 'tab\there "quoted", comma\nnewline \\ backslash', None, False, decimal.Decimal("-2.25"), b"", None),
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, t text, at timestamptz, ok boolean, "
                     "n numeric(8,2), b bytea, d date)")
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            seen.append(("text in", cur.rowcount))
            with cur.copy(f"COPY {table} (id, t, d) FROM STDIN WITH (FORMAT csv, HEADER)") as copy:
                copy.write('id,t,d\n10,"a,b",2020-02-29\n11,"",\n12,,2021-01-01\n')
            with cur.copy(f"COPY {table} (id, t, n) FROM STDIN (FORMAT binary)") as copy:
                copy.set_types(["int4", "text", "numeric"])
                copy.write_row((20, "binary", decimal.Decimal("7.25")))
                copy.write_row((21, None, None))
            try:
                with cur.copy(f"COPY {table} (id, ok) FROM STDIN") as copy:
                    copy.write_row((30, True))
                    copy.write("31\tnot-a-boolean\n")
            except psycopg.errors.InvalidTextRepresentation:
                seen.append("bad boolean refused")
            except psycopg.Error as e:
                seen.append(("bad boolean refused", e.sqlstate[:2]))
            seen.append(cur.execute(f"SELECT id, t, at, ok, n, b, d FROM {table} ORDER BY id").fetchall())
            with cur.copy(f"COPY (SELECT id, t, at, ok, n, b, d FROM {table} ORDER BY id) TO STDOUT") as copy:
                seen.append([bytes(block) for block in copy])
            with cur.copy(f"COPY {table} (id, t) TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';')") as copy:
                seen.append(b"".join(bytes(block) for block in copy))
            with cur.copy(f"COPY (SELECT id, t, n FROM {table} ORDER BY id) TO STDOUT (FORMAT binary)") as copy:
                copy.set_types(["int4", "text", "numeric"])
                seen.append(list(copy.rows()))
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} (id) FROM STDIN") as copy:
                copy.write_row((40,))
            seen.append(cur.execute(f"SELECT count(*) FROM {table}").fetchone())
        conn.rollback()
        seen.append(conn.execute(f"SELECT count(*) FROM {table}").fetchone())
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Columns COPY leaves out take their defaults; a UNIQUE one holds.
        conn.execute(f"CREATE TABLE {table}_serial (id serial PRIMARY KEY, name text UNIQUE, n int DEFAULT 5)")
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table}_serial (name) FROM STDIN") as copy:
                copy.write("a\nb\n")
            try:
                with cur.copy(f"COPY {table}_serial (name, n) FROM STDIN (FORMAT csv)") as copy:
                    copy.write("c,7\na,8\n")
            except psycopg.errors.UniqueViolation:
                seen.append("duplicate refused")
            with cur.copy(f"COPY {table}_serial (name, n) FROM STDIN (FORMAT csv)") as copy:
                copy.write("d,9\n")
            seen.append(cur.execute(f"SELECT name, n FROM {table}_serial ORDER BY name").fetchall())
            seen.append(cur.execute(f"SELECT id FROM {table}_serial WHERE name = 'd'").fetchall())
    return seen


def test_copy_as_postgres(server):
    ours = copy_script(server.dsn(), "copy_script")
    theirs = copy_script(reference().dsn(), "copy_script")
    for a, b in zip(ours, theirs):
        assert a == b, f"\n  runnel:   {a}\n  postgres: {b}"
    assert len(ours) == len(theirs), (ours, theirs)


def test_catalog_functions_as_postgres(server):
    assert_same(server, [
        "SELECT current_setting('TimeZone'), current_setting('no_such_setting', true)",
        "SELECT pg_typeof('a'::text), pg_typeof(1.5::float8), pg_typeof(now()), pg_typeof(true)",
        "SELECT pg_size_pretty(1024::bigint), pg_size_pretty(123456789::bigint), pg_size_pretty(-12345678::bigint)",
        "SELECT pg_is_in_recovery(), pg_type_is_visible(23)",
        "SELECT obj_description(1259, 'pg_class'), col_description(1259, 1), shobj_description(999999, 'pg_database')",
        # psycopg's TypeInfo.fetch (SQLAlchemy's psycopg dialect on connect).
        "SELECT typname FROM pg_type WHERE oid IN (to_regtype('integer'), to_regtype('character varying(5)'),"
        " to_regtype('pg_catalog.int8'), to_regtype('double precision[]')) ORDER BY 1",
        "SELECT count(*) FROM pg_type WHERE oid = to_regtype('hstore')",
    ])


def test_sequences_and_serial_columns_as_postgres(server):
    assert_same(server, [
        "CREATE SEQUENCE seq_a",
        "SELECT nextval('seq_a'), nextval('seq_a')",
        "SELECT currval('seq_a')",
        "SELECT setval('seq_a', 100)",
        "SELECT nextval('public.seq_a')",
        "SELECT setval('seq_a', 5, false)",
        "SELECT nextval('seq_a')",
        "CREATE SEQUENCE seq_down INCREMENT BY -2",
        "SELECT nextval('seq_down'), nextval('seq_down')",
        "CREATE SEQUENCE seq_cycle MINVALUE 1 MAXVALUE 2 CYCLE",
        "SELECT nextval('seq_cycle'), nextval('seq_cycle'), nextval('seq_cycle')",
        "CREATE SEQUENCE seq_bad MAXVALUE 1",
        "CREATE SEQUENCE seq_small MAXVALUE 2",
        "SELECT nextval('seq_small'), nextval('seq_small')",
        "SELECT nextval('seq_small')",
        "SELECT currval('seq_never')",
        "CREATE SEQUENCE seq_a",
        "CREATE SEQUENCE IF NOT EXISTS seq_a",
        "CREATE TABLE serial_items (id serial PRIMARY KEY, name text, n bigserial)",
        "INSERT INTO serial_items (name) VALUES ('a'), ('b')",
        "INSERT INTO serial_items (name) VALUES ('c') RETURNING id, n",
        "SELECT * FROM serial_items ORDER BY id",
        "SELECT nextval('serial_items_id_seq')",
        "SELECT pg_get_serial_sequence('serial_items', 'id'), pg_get_serial_sequence('public.serial_items', 'n'),"
        " pg_get_serial_sequence('serial_items', 'name')",
        "SELECT pg_get_serial_sequence('no_such_table', 'id')",
        "DROP TABLE serial_items",
        "CREATE TABLE ident_items (id bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 10) PRIMARY KEY, v text)",
        "INSERT INTO ident_items (v) VALUES ('a'), ('b')",
        "INSERT INTO ident_items VALUES (1, 'explicit')",
        "SELECT * FROM ident_items ORDER BY id",
        "DROP TABLE ident_items",
        "SELECT nextval('serial_items_id_seq')",
        "DROP SEQUENCE seq_a, seq_down, seq_cycle, seq_small",
        "DROP SEQUENCE seq_a",
        "DROP SEQUENCE IF EXISTS seq_a",
    ])


def test_unique_constraints_and_indexes_as_postgres(server):
    assert_same(server, [
        "CREATE TABLE uq (id serial PRIMARY KEY, email text UNIQUE, a int, b int, UNIQUE (a, b))",
        "INSERT INTO uq (email, a, b) VALUES ('x', 1, 1), ('y', 1, 2), (NULL, 1, NULL), (NULL, 1, NULL)",
        "INSERT INTO uq (email) VALUES ('x')",
        "INSERT INTO uq (email) VALUES ('z'), ('z')",
        "INSERT INTO uq (a, b) VALUES (1, 2)",
        "UPDATE uq SET email = 'y' WHERE email = 'x'",
        # (Swapping two values in one UPDATE fails in Postgres, which checks
        # row by row; Runnel checks at the end of the statement, as the SQL
        # standard says, so that one is left out.)
        "SELECT id, email, a, b FROM uq ORDER BY id",
        "DELETE FROM uq WHERE email = 'x'",
        "INSERT INTO uq (email) VALUES ('x') RETURNING email",
        "CREATE INDEX ON uq (a)",
        "CREATE UNIQUE INDEX uq_a_unique ON uq (a)",
        "CREATE UNIQUE INDEX uq_id_a ON uq (id, a)",
        "CREATE INDEX IF NOT EXISTS uq_id_a ON uq (b)",
        "CREATE INDEX uq_id_a ON uq (b)",
        "CREATE TABLE uq_id_a (x int)",
        "DROP INDEX uq_email_key",
        "ALTER TABLE uq DROP CONSTRAINT uq_email_key",
        "INSERT INTO uq (email) VALUES ('x')",
        "ALTER TABLE uq ADD CONSTRAINT uq_em UNIQUE (email)",
        "DELETE FROM uq WHERE email = 'x' AND id > 6",
        "ALTER TABLE uq ADD CONSTRAINT uq_em UNIQUE (email)",
        "INSERT INTO uq (email) VALUES ('x')",
        "DROP INDEX uq_a_idx",
        "DROP INDEX uq_a_idx",
        "DROP INDEX IF EXISTS uq_a_idx",
        "ALTER TABLE uq DROP CONSTRAINT IF EXISTS nothing_here",
        "ALTER TABLE uq ADD COLUMN c int NOT NULL DEFAULT 3",
        "INSERT INTO uq (email, c) VALUES ('x', 4)",
        "TRUNCATE uq",
        "INSERT INTO uq (email) VALUES ('x')",
        "SELECT email, c FROM uq",
        "DROP TABLE uq",
        "CREATE TABLE uq (id int)",
        "CREATE INDEX uq_id_idx ON uq (id)",
        "DROP TABLE uq",
    ])


def test_check_constraints_as_postgres(server):
    assert_same(server, [
        "CREATE TABLE ck (id int PRIMARY KEY, qty int CHECK (qty >= 0), price numeric(8,2),"
        " CONSTRAINT ck_price_positive CHECK (price > 0), CHECK (qty < 1000 OR price < 10))",
        "INSERT INTO ck VALUES (1, 5, 2.50), (2, NULL, NULL)",
        "INSERT INTO ck VALUES (3, -1, 1)",
        "INSERT INTO ck VALUES (3, 1, 0)",
        "INSERT INTO ck VALUES (3, 2000, 50)",
        "INSERT INTO ck VALUES (3, 2000, 5)",
        "UPDATE ck SET qty = qty - 10 WHERE id = 1",
        "UPDATE ck SET qty = qty - 5 WHERE id = 1",
        "SELECT * FROM ck ORDER BY id",
        "ALTER TABLE ck ADD CONSTRAINT ck_id_small CHECK (id < 3)",
        "ALTER TABLE ck ADD CONSTRAINT ck_id_small CHECK (id < 100)",
        "ALTER TABLE ck ADD CONSTRAINT ck_id_small CHECK (id < 50)",
        "INSERT INTO ck VALUES (200, 1, 1)",
        "ALTER TABLE ck DROP CONSTRAINT ck_id_small",
        "INSERT INTO ck VALUES (200, 1, 1)",
        "ALTER TABLE ck DROP CONSTRAINT ck_qty_check",
        "INSERT INTO ck VALUES (201, -5, 1)",
        "ALTER TABLE ck ADD CHECK (qty > 0)",
        "CREATE TABLE ck_bad (a int CHECK (a + 1))",
        "CREATE TABLE ck_bad (a int CHECK (b > 0))",
        "SELECT * FROM ck ORDER BY id",
        "DROP TABLE ck",
    ])


def test_insert_on_conflict_as_postgres(server):
    assert_same(server, [
        "CREATE TABLE oc (k int PRIMARY KEY, v text, n int DEFAULT 0, code text UNIQUE)",
        "INSERT INTO oc VALUES (1, 'a', 0, 'x'), (2, 'b', 0, 'y')",
        "INSERT INTO oc VALUES (1, 'z', 0, 'q'), (3, 'c', 0, 'w') ON CONFLICT DO NOTHING",
        "INSERT INTO oc VALUES (4, 'd', 0, 'x') ON CONFLICT DO NOTHING",
        "INSERT INTO oc VALUES (4, 'd', 0, 'x') ON CONFLICT (k) DO NOTHING",
        "INSERT INTO oc VALUES (7, 'g', 0, 'g'), (7, 'h', 0, 'h') ON CONFLICT DO NOTHING",
        "INSERT INTO oc VALUES (1, 'new', 0, 'x') ON CONFLICT (k) DO UPDATE SET v = excluded.v, n = oc.n + 1 RETURNING *",
        "INSERT INTO oc AS t VALUES (1, 'newer', 0, 'x'), (5, 'e', 0, 'e') ON CONFLICT (k)"
        " DO UPDATE SET v = excluded.v, n = t.n + 1 WHERE t.n < 5 RETURNING k, v, n",
        "INSERT INTO oc VALUES (1, 'skipped', 0, 'x') ON CONFLICT (k) DO UPDATE SET v = excluded.v WHERE oc.n > 100",
        "INSERT INTO oc VALUES (9, 'by code', 0, 'y') ON CONFLICT (code) DO UPDATE SET v = excluded.v",
        "INSERT INTO oc VALUES (9, 'by code', 0, 'y') ON CONFLICT ON CONSTRAINT oc_code_key DO UPDATE SET v = 'c2'",
        "INSERT INTO oc VALUES (8, 'pk', 0, 'p') ON CONFLICT ON CONSTRAINT oc_pkey DO NOTHING",
        "INSERT INTO oc VALUES (1, 'a', 0, 'x'), (1, 'b', 0, 'x') ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        "INSERT INTO oc VALUES (1, 'a', 0, 'x') ON CONFLICT (v) DO NOTHING",
        "INSERT INTO oc VALUES (1, 'a', 0, 'x') ON CONFLICT DO UPDATE SET v = 'q'",
        "INSERT INTO oc VALUES (1, 'a', 0, 'x') ON CONFLICT ON CONSTRAINT nothing DO NOTHING",
        "INSERT INTO oc VALUES (6, 'f', 0, 'x') ON CONFLICT (k) DO UPDATE SET v = 'q'",
        "INSERT INTO oc VALUES (2, 'g', 0, 'y') ON CONFLICT (k) DO UPDATE SET code = 'x'",
        "INSERT INTO oc (k, v) SELECT k + 100, v FROM oc WHERE k < 3 ON CONFLICT (k) DO UPDATE SET v = 'dup'",
        "SELECT * FROM oc ORDER BY k",
        "DROP TABLE oc",
    ])


def test_alter_table_columns_as_postgres(server):
    assert_same(server, [
        "CREATE TABLE alt (id serial PRIMARY KEY, name text, qty int, code text UNIQUE,"
        " note varchar(10), CHECK (qty >= 0))",
        "INSERT INTO alt (name, qty, code, note) VALUES ('a', 1, 'x', 'n1'), ('b', NULL, 'y', 'n2')",
        "CREATE INDEX alt_qty_idx ON alt (qty)",
        "ALTER TABLE alt ALTER COLUMN qty SET DEFAULT 7",
        "INSERT INTO alt (name, code) VALUES ('c', 'z') RETURNING qty",
        "ALTER TABLE alt ALTER COLUMN qty DROP DEFAULT",
        "INSERT INTO alt (name, code) VALUES ('d', 'w') RETURNING qty",
        "ALTER TABLE alt ALTER COLUMN qty SET NOT NULL",
        "ALTER TABLE alt ALTER COLUMN name SET NOT NULL",
        "INSERT INTO alt (code) VALUES ('v')",
        "ALTER TABLE alt ALTER COLUMN name DROP NOT NULL",
        "INSERT INTO alt (code) VALUES ('v')",
        "ALTER TABLE alt ALTER COLUMN id DROP NOT NULL",
        "ALTER TABLE alt ALTER COLUMN note TYPE text",
        "ALTER TABLE alt ALTER COLUMN qty TYPE bigint",
        "SELECT id, name, qty, code, note FROM alt ORDER BY id",
        "ALTER TABLE alt DROP COLUMN qty",
        "ALTER TABLE alt DROP COLUMN qty",
        "ALTER TABLE alt DROP COLUMN IF EXISTS qty",
        "INSERT INTO alt (name, code) VALUES ('e', 'x')",
        "ALTER TABLE alt DROP COLUMN code",
        "INSERT INTO alt (name) VALUES ('f')",
        "ALTER TABLE alt ADD COLUMN flag boolean NOT NULL DEFAULT true, DROP COLUMN note",
        "SELECT * FROM alt ORDER BY id",
        "CREATE VIEW alt_names AS SELECT name FROM alt",
        "ALTER TABLE alt DROP COLUMN flag",
        "DROP VIEW alt_names",
        "ALTER TABLE alt DROP COLUMN flag",
        "SELECT * FROM alt ORDER BY id",
        # A column with constraints of its own: all or nothing.
        "ALTER TABLE alt ADD COLUMN price int DEFAULT -1 CHECK (price >= 0)",
        "ALTER TABLE alt ADD COLUMN price int DEFAULT 0 CHECK (price >= 0), ADD COLUMN sku text UNIQUE",
        "INSERT INTO alt (name, price) VALUES ('g', -5)",
        "INSERT INTO alt (name, sku) VALUES ('h', 's1'), ('i', 's1')",
        "ALTER TABLE alt ADD COLUMN tag text DEFAULT 'same' CONSTRAINT alt_tag_unique UNIQUE",
        "SELECT conname, contype FROM pg_constraint WHERE conrelid = 'alt'::regclass ORDER BY conname",
        "SELECT * FROM alt ORDER BY id",
        "DROP TABLE alt",
    ])


def unique_block_script(dsn):
    """Unique values moved around inside blocks, one failing at COMMIT
    because another session took the value first."""
    seen = []
    with psycopg.connect(dsn, autocommit=True) as other, psycopg.connect(dsn) as conn:
        other.execute("CREATE TABLE uqb (id int PRIMARY KEY, code text UNIQUE)")
        other.execute("INSERT INTO uqb VALUES (1, 'a'), (2, 'b')")
        conn.execute("DELETE FROM uqb WHERE code = 'a'")
        conn.execute("INSERT INTO uqb VALUES (3, 'a')")
        try:
            conn.execute("INSERT INTO uqb VALUES (4, 'a')")
        except psycopg.errors.UniqueViolation:
            seen.append("duplicate in block")
        conn.rollback()
        conn.execute("UPDATE uqb SET code = 'c' WHERE id = 2")
        conn.execute("INSERT INTO uqb VALUES (5, 'b')")
        conn.execute("INSERT INTO uqb VALUES (5, 'bb'), (6, 'f') ON CONFLICT (id) DO UPDATE SET code = excluded.code || '!'")
        conn.execute("INSERT INTO uqb VALUES (7, 'a'), (8, 'bb!') ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO uqb VALUES (9, 'f') ON CONFLICT (code) DO UPDATE SET code = 'f2'")
        conn.commit()
        seen.append(other.execute("SELECT * FROM uqb ORDER BY id").fetchall())
    return seen


def index_after_writes_script(dsn):
    """CREATE INDEX inside a block that already changed the table's rows:
    the index covers the block's rows, a duplicate among them fails it."""
    seen = []
    with psycopg.connect(dsn, autocommit=True) as other, psycopg.connect(dsn) as conn:
        other.execute("CREATE TABLE ixb (id int PRIMARY KEY, code text)")
        other.execute("INSERT INTO ixb VALUES (1, 'a'), (2, 'b')")
        conn.execute("INSERT INTO ixb VALUES (3, 'a')")
        try:
            conn.execute("CREATE UNIQUE INDEX ixb_code ON ixb (code)")
        except psycopg.Error as e:
            seen.append(("duplicate", e.sqlstate))
        conn.rollback()
        conn.execute("INSERT INTO ixb VALUES (3, 'c')")
        conn.execute("UPDATE ixb SET code = 'd' WHERE id = 1")
        conn.execute("CREATE UNIQUE INDEX ixb_code ON ixb (code)")
        try:
            conn.execute("INSERT INTO ixb VALUES (4, 'c')")
        except psycopg.Error as e:
            seen.append(("in block", e.sqlstate))
        conn.rollback()
        conn.execute("DELETE FROM ixb WHERE id = 2")
        conn.execute("ALTER TABLE ixb ADD COLUMN n int DEFAULT 5 UNIQUE")
        conn.commit()
        seen.append(other.execute("SELECT * FROM ixb ORDER BY id").fetchall())
        seen.append(other.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'ixb' ORDER BY 1").fetchall())
        try:
            other.execute("INSERT INTO ixb VALUES (9, 'z', 5)")
        except psycopg.Error as e:
            seen.append(("after", e.sqlstate))
        other.execute("DROP TABLE ixb")
    return seen


def test_index_after_writes_in_block_as_postgres(server):
    ours = index_after_writes_script(server.dsn())
    theirs = index_after_writes_script(reference().dsn())
    assert ours == theirs, f"\n  runnel:   {ours}\n  postgres: {theirs}"


def test_unique_constraints_in_blocks_as_postgres(server):
    ours = unique_block_script(server.dsn())
    theirs = unique_block_script(reference().dsn())
    assert ours == theirs, f"\n  runnel:   {ours}\n  postgres: {theirs}"
    # Runnel checks again at COMMIT: a value another session committed
    # first fails the block (Postgres would have waited on its lock).
    with psycopg.connect(server.dsn(), autocommit=True) as other, psycopg.connect(server.dsn()) as conn:
        conn.execute("INSERT INTO uqb VALUES (60, 'z')")
        other.execute("INSERT INTO uqb VALUES (70, 'z')")
        try:
            conn.commit()
            raise AssertionError("commit of a value taken meanwhile succeeded")
        except psycopg.errors.UniqueViolation:
            conn.rollback()
        assert other.execute("SELECT id FROM uqb WHERE code = 'z'").fetchall() == [(70,)]


def random_unique_script(dsn, seed):
    """Random single-row writes to a table with a primary key and a
    UNIQUE column, some in blocks with a savepoint around each statement,
    blocks committed or rolled back. Returns each statement's outcome and
    the rows after each block."""
    rng = random.Random(seed)
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS rq")
        conn.execute("CREATE TABLE rq (id int PRIMARY KEY, code int UNIQUE, tag text)")

        def run(sql):
            try:
                cur = conn.execute(sql)
                out.append((sql, cur.statusmessage))
                return True
            except psycopg.Error as e:
                out.append((sql, e.sqlstate))
                return False

        def statement():
            code = rng.choice(["NULL", 1, 2, 3, 4, 5, 6])
            key = rng.randint(1, 10)
            return rng.choice([
                f"INSERT INTO rq VALUES ({key}, {code}, 't{key}')",
                f"INSERT INTO rq VALUES ({key}, {code}, 'a'), ({rng.randint(1, 10)}, {rng.choice([1, 2, 3, 'NULL'])}, 'b')",
                f"UPDATE rq SET code = {code} WHERE id = {key}",
                f"UPDATE rq SET id = {rng.randint(1, 10)} WHERE id = {key}",
                f"DELETE FROM rq WHERE id = {key}",
                f"DELETE FROM rq WHERE code = {code}",
            ])

        for _ in range(40):
            if rng.random() < 0.5:
                run(statement())
                continue
            run("BEGIN")
            for _ in range(rng.randint(1, 6)):
                run("SAVEPOINT s")
                run("RELEASE s" if run(statement()) else "ROLLBACK TO s")
            run(rng.choice(["COMMIT", "ROLLBACK"]))
            out.append(conn.execute("SELECT id, code, tag FROM rq ORDER BY id").fetchall())
        conn.execute("DROP TABLE rq")
    return out


def test_random_unique_writes_as_postgres(server):
    for seed in range(6):
        ours = random_unique_script(server.dsn(), seed)
        theirs = random_unique_script(reference().dsn(), seed)
        diffs = [f"runnel:   {o}\npostgres: {t}" for o, t in zip(ours, theirs) if o != t]
        assert not diffs, f"seed {seed}:\n" + "\n".join(diffs[:5])


def test_scalar_subqueries_as_postgres(server):
    assert_same(server, [
        "CREATE TABLE sq (k int, v text)",
        "INSERT INTO sq VALUES (1, 'x'), (2, 'y'), (2, 'z'), (3, NULL)",
        "SELECT k, (SELECT v FROM sq b WHERE b.k = sq.k AND b.v <> 'z') AS s FROM sq ORDER BY k, s",
        "SELECT k, (SELECT v FROM sq b WHERE b.k = sq.k) FROM sq ORDER BY k",
        "SELECT k, (SELECT max(v) FROM sq b WHERE b.k = sq.k) AS m FROM sq ORDER BY k, m",
        "SELECT (SELECT v FROM sq)",
        "SELECT (SELECT v FROM sq WHERE k = 9), (SELECT v FROM sq WHERE k = 1), (SELECT 1)",
        "SELECT k FROM sq WHERE v = (SELECT v FROM sq WHERE k = 1)",
        "SELECT k FROM sq WHERE v = (SELECT v FROM sq WHERE k = 2)",
        "DROP TABLE sq",
    ])


def test_timestamps_without_seconds_as_postgres(server):
    assert_same(server, [
        "SELECT '2024-01-01 10:00'::timestamp, timestamp '2024-01-01 9:05', '2024-01-01T10:00'::timestamp",
        "CREATE TABLE tsm (t timestamp)",
        "INSERT INTO tsm VALUES ('2024-01-01 10:00'), ('2024-01-01 10:00:30')",
        "SELECT t FROM tsm WHERE t >= '2024-01-01 10:00' ORDER BY t",
        "DROP TABLE tsm",
    ])


def test_create_table_as_as_postgres(server):
    assert_same(server, [
        "CREATE TABLE ctas_src (id int PRIMARY KEY, name text, price numeric(8,2), at date)",
        "INSERT INTO ctas_src VALUES (1, 'a', 1.50, '2024-01-02'), (2, 'b', 2.25, NULL)",
        "CREATE TABLE ctas AS SELECT id, upper(name) AS name, price * 2 AS double_price, at FROM ctas_src",
        "SELECT * FROM ctas ORDER BY id",
        "SELECT pg_typeof(id), pg_typeof(name), pg_typeof(at) FROM ctas LIMIT 1",
        "CREATE TABLE ctas AS SELECT 1",
        "CREATE TABLE IF NOT EXISTS ctas AS SELECT 1",
        "CREATE TABLE ctas_bad AS SELECT nope FROM ctas_src",
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'ctas_bad'",
        "DROP TABLE ctas, ctas_src",
    ])


def test_view_ddl_as_postgres(server):
    assert_same(server, [
        "CREATE TABLE vd (a int, b text)",
        "INSERT INTO vd VALUES (1, 'x'), (2, 'y')",
        "CREATE VIEW vd_view AS SELECT a, b FROM vd",
        "CREATE OR REPLACE VIEW vd_view AS SELECT a, b, a * 2 AS twice FROM vd WHERE a > 1",
        "SELECT * FROM vd_view",
        "CREATE OR REPLACE VIEW vd_view AS SELECT a FROM vd",
        "CREATE OR REPLACE VIEW vd_view AS SELECT b AS a, a AS b, 0 AS twice FROM vd",
        "CREATE OR REPLACE VIEW vd_view AS SELECT a, b, a * 3 AS twice FROM vd",
        "SELECT * FROM vd_view ORDER BY a",
        "CREATE OR REPLACE VIEW vd AS SELECT 1",
    ])
    # Postgres tags CREATE MATERIALIZED VIEW with its row count; Runnel's
    # view fills as its job runs. REFRESH then waits until it is in.
    for dsn in (server.dsn(), reference().dsn()):
        answer(dsn, "CREATE MATERIALIZED VIEW vd_counts AS SELECT count(*) AS n FROM vd")
    assert_same(server, [
        "REFRESH MATERIALIZED VIEW vd_counts",
        "SELECT * FROM vd_counts",
        "REFRESH MATERIALIZED VIEW vd_view",
        "REFRESH MATERIALIZED VIEW no_such_view",
        "DROP MATERIALIZED VIEW vd_counts",
        "DROP VIEW vd_view",
        "DROP TABLE vd",
    ])


def serial_session_script(dsn):
    """currval after an INSERT that took a SERIAL default, in one session."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE serial_session (id serial PRIMARY KEY, v text)")
        conn.execute("INSERT INTO serial_session (v) VALUES ('a'), ('b')")
        got = conn.execute("SELECT currval('serial_session_id_seq')").fetchone()
        with psycopg.connect(dsn, autocommit=True) as other:
            try:
                other.execute("SELECT currval('serial_session_id_seq')")
                other_got = "defined"
            except psycopg.Error as e:
                other_got = e.sqlstate
        conn.execute("DROP TABLE serial_session")
        return got, other_got


def test_currval_follows_the_session_as_postgres(server):
    assert serial_session_script(server.dsn()) == serial_session_script(reference().dsn())
