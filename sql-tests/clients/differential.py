"""Differential tests: the same statements against Runnel and against a
real PostgreSQL 15 (reference_pg.py); the column names, command tags and
rows each answers must match."""

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
