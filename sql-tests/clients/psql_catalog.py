"""psql's describe meta-commands against Runnel and against a real
PostgreSQL 15 over the same schema: the printed output must be the same."""

import difflib
import subprocess

from differential import reference

# Objects in a schema of their own, so other tests' objects stay out of
# the listings. CHECKs over integers only: Postgres prints the implicit
# casts it adds (`price >= 0::numeric`), which Runnel does not store.
SCHEMA = """
CREATE SCHEMA psqlcat;
CREATE TABLE psqlcat.items (
    id SERIAL PRIMARY KEY,
    name VARCHAR(40) NOT NULL UNIQUE,
    qty INTEGER DEFAULT 0 CHECK (qty >= 0),
    price NUMERIC(10,2) DEFAULT -1.5,
    note TEXT DEFAULT 'n/a',
    flag BOOLEAN DEFAULT 'yes',
    CONSTRAINT items_qty_small CHECK (qty < 1000)
);
CREATE INDEX items_note_idx ON psqlcat.items (note);
CREATE UNIQUE INDEX items_name_price ON psqlcat.items (name, price);
CREATE TABLE psqlcat."Mixed Case" ("Key" BIGINT PRIMARY KEY, "select" TEXT);
CREATE VIEW psqlcat.small AS SELECT id, note FROM psqlcat.items WHERE qty < 10;
CREATE SEQUENCE psqlcat.counter START 5 INCREMENT 2;
CREATE SEQUENCE psqlcat.small_counter AS integer MAXVALUE 100 CYCLE;
"""

COMMANDS = [
    "\\d psqlcat.items",
    "\\d psqlcat.\"Mixed Case\"",
    "\\d psqlcat.items_pkey",
    "\\d psqlcat.items_name_price",
    "\\d psqlcat.items_id_seq",
    "\\d psqlcat.counter",
    "\\d psqlcat.small_counter",
    "\\d psqlcat.*",
    "\\dt psqlcat.*",
    "\\di psqlcat.*",
    "\\ds psqlcat.*",
    "\\dv psqlcat.*",
    "\\dn psqlcat",
]


def psql(port, *args):
    out = subprocess.run(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "runnel", "runnel", *args],
        capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def test_psql_describe_as_postgres(server):
    for port in (server.port, reference().port):
        out = psql(port, "-v", "ON_ERROR_STOP=1", "-q", "-c", SCHEMA)
        assert "ERROR" not in out, out
    differences = []
    for command in COMMANDS:
        ours, theirs = psql(server.port, "-c", command), psql(reference().port, "-c", command)
        if ours != theirs:
            diff = difflib.unified_diff(theirs.splitlines(), ours.splitlines(), "postgres", "runnel",
                                        lineterm="")
            differences.append(f"{command}\n" + "\n".join(diff))
    assert not differences, "\n".join(differences)


def test_information_schema_as_postgres(server):
    """The information_schema views tools read (columns, constraints,
    views), on both servers over the same schema."""
    from differential import assert_same
    assert_same(server, [
        "CREATE SCHEMA infocat",
        "CREATE TABLE infocat.orders (id BIGSERIAL PRIMARY KEY, code VARCHAR(12) NOT NULL,"
        " qty INTEGER DEFAULT 1 CHECK (qty > 0), total NUMERIC(12,2), note TEXT DEFAULT 'none',"
        " placed TIMESTAMP, CONSTRAINT orders_code_key UNIQUE (code))",
        "CREATE TABLE infocat.lines (order_id BIGINT, line INTEGER, PRIMARY KEY (order_id, line))",
        "CREATE VIEW infocat.big AS SELECT id, qty FROM infocat.orders WHERE qty > 10",
    ])
    assert_same(server, [
        "SELECT table_name, column_name, ordinal_position, is_nullable, data_type, udt_name,"
        " character_maximum_length, numeric_precision, numeric_precision_radix, numeric_scale,"
        " datetime_precision FROM information_schema.columns WHERE table_schema = 'infocat'"
        " AND table_name <> 'big' ORDER BY table_name, ordinal_position",
        "SELECT table_name, column_name, column_default FROM information_schema.columns"
        " WHERE table_schema = 'infocat' AND column_default IS NOT NULL"
        " AND column_default NOT LIKE 'nextval%' ORDER BY 1, 2",
        "SELECT table_name, column_name, ordinal_position, data_type, is_nullable"
        " FROM information_schema.columns WHERE table_schema = 'infocat' AND table_name = 'big'"
        " ORDER BY ordinal_position",
        "SELECT constraint_name, table_name, constraint_type, is_deferrable, initially_deferred,"
        " nulls_distinct FROM information_schema.table_constraints WHERE table_schema = 'infocat'"
        " AND constraint_type <> 'CHECK' ORDER BY constraint_name",
        "SELECT constraint_name FROM information_schema.table_constraints"
        " WHERE table_schema = 'infocat' AND constraint_type = 'CHECK'"
        " AND constraint_name NOT LIKE '%not_null' ORDER BY 1",
        "SELECT constraint_name, table_name, column_name, ordinal_position"
        " FROM information_schema.key_column_usage WHERE table_schema = 'infocat'"
        " ORDER BY constraint_name, ordinal_position",
        "SELECT constraint_name, check_clause FROM information_schema.check_constraints"
        " WHERE constraint_schema = 'infocat' AND constraint_name NOT LIKE '%not_null' ORDER BY 1",
        # (is_updatable differs: Runnel's views take no writes.)
        "SELECT table_name, check_option FROM information_schema.views"
        " WHERE table_schema = 'infocat'",
        "SELECT table_name, table_type FROM information_schema.tables"
        " WHERE table_schema = 'infocat' ORDER BY 1",
        "DROP SCHEMA infocat CASCADE",
    ])


# The catalog queries Grafana's PostgreSQL data source runs (query
# builder: tables on the search path, their columns; version and
# TimescaleDB probes).
GRAFANA_QUERIES = [
    """SELECT quote_ident(table_name) AS "table" FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog',
        '_timescaledb_cache', '_timescaledb_catalog', '_timescaledb_internal',
        '_timescaledb_config', 'timescaledb_information', 'timescaledb_experimental')
      AND table_type = 'BASE TABLE'
      AND quote_ident(table_schema) IN (
        SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
        FROM generate_series(
                array_lower(string_to_array(current_setting('search_path'),','),1),
                array_upper(string_to_array(current_setting('search_path'),','),1)
            ) AS i,
            string_to_array(current_setting('search_path'),',') s)
    ORDER BY 1""",
    """SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE quote_ident(table_name) = 'metrics'
    ORDER BY ordinal_position""",
    "SELECT current_setting('server_version_num')::int / 100 AS version",
    "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'timescaledb'",
]


def grafana_script(dsn):
    import psycopg
    seen = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA graf")
        conn.execute("CREATE TABLE graf.metrics (time timestamptz, host varchar(20), value double precision)")
        conn.execute("CREATE TABLE graf.\"Hosts\" (name text PRIMARY KEY)")
        conn.execute("CREATE VIEW graf.recent AS SELECT * FROM graf.metrics")
        conn.execute("SET search_path = graf")
        try:
            for sql in GRAFANA_QUERIES:
                cur = conn.execute(sql)
                seen.append(([c.name for c in cur.description], cur.fetchall()))
        finally:
            conn.execute("DROP SCHEMA graf CASCADE")
    return seen


def test_grafana_catalog_queries_as_postgres(server):
    from differential import reference
    ours, theirs = grafana_script(server.dsn()), grafana_script(reference().dsn())
    assert ours == theirs, f"\n  runnel:   {ours}\n  postgres: {theirs}"
