"""Migration tools against Runnel and a real PostgreSQL 15, compared:
Alembic (upgrade, downgrade, an autogenerate check that finds the schema
equal to the models, a failing migration that leaves no trace), dbmate
(SQL files, Go's lib/pq) and node-pg-migrate (JavaScript migrations,
node-postgres, advisory locks), each up and down."""

import contextlib
import io
import os
import subprocess
import tempfile
import textwrap

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
import psycopg
from sqlalchemy import (Boolean, CheckConstraint, Column, Index, Integer, MetaData, String, Table,
                        create_engine, inspect, text)

from differential import reference
from orm import url

REVISIONS = {
    "0001_accounts": ("None", """
        op.create_table(
            "mig_accounts",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("email", sa.String(120), nullable=False, unique=True),
            sa.Column("balance", sa.Integer, nullable=False, server_default="0"),
            sa.CheckConstraint("balance >= 0", name="mig_balance_positive"),
        )
        op.create_index("ix_mig_accounts_balance", "mig_accounts", ["balance"])
    """, """
        op.drop_index("ix_mig_accounts_balance", table_name="mig_accounts")
        op.drop_table("mig_accounts")
    """),
    "0002_active": ("'0001_accounts'", """
        op.add_column("mig_accounts", sa.Column("active", sa.Boolean, nullable=True))
        op.execute("UPDATE mig_accounts SET active = true")
        op.alter_column("mig_accounts", "active", nullable=False)
        op.add_column("mig_accounts", sa.Column("nickname", sa.String(40)))
        op.alter_column("mig_accounts", "nickname", type_=sa.String(80))
        op.drop_column("mig_accounts", "nickname")
    """, """
        op.drop_column("mig_accounts", "active")
    """),
}

# The third revision fails halfway: its first statements must not stay.
FAILING = ("'0002_active'", """
        op.create_table("mig_half", sa.Column("id", sa.Integer, primary_key=True))
        op.add_column("mig_accounts", sa.Column("note", sa.Text))
        op.execute("INSERT INTO mig_accounts (id, email) VALUES (1, NULL)")
    """, """
        op.drop_table("mig_half")
    """)


def models():
    """The models the migrations arrive at, for the autogenerate check."""
    metadata = MetaData()
    Table(
        "mig_accounts", metadata,
        Column("id", Integer, primary_key=True),
        Column("email", String(120), nullable=False, unique=True),
        Column("balance", Integer, nullable=False, server_default="0"),
        Column("active", Boolean, nullable=False),
        CheckConstraint("balance >= 0", name="mig_balance_positive"),
        Index("ix_mig_accounts_balance", "balance"),
    )
    return metadata


def write_revision(versions, name, down, upgrade, downgrade):
    def body(code):
        return textwrap.indent(textwrap.dedent(code).strip(), "    ")

    with open(os.path.join(versions, f"{name}.py"), "w") as f:
        f.write(
            "import sqlalchemy as sa\n"
            "from alembic import op\n\n"
            f"revision = {name!r}\n"
            f"down_revision = {down}\n"
            "branch_labels = None\n"
            "depends_on = None\n\n\n"
            f"def upgrade():\n{body(upgrade)}\n\n\n"
            f"def downgrade():\n{body(downgrade)}\n"
        )


def state(engine):
    """The migration-visible schema: tables, columns, indexes, version."""
    inspector = inspect(engine)
    tables = sorted(t for t in inspector.get_table_names() if t.startswith("mig_") or t == "alembic_version")
    out = {}
    for table in tables:
        out[table] = {
            "columns": [(c["name"], repr(c["type"]), c["nullable"], c["default"])
                        for c in inspector.get_columns(table)],
            "indexes": sorted((i["name"], i["unique"], tuple(i["column_names"]))
                              for i in inspector.get_indexes(table)),
        }
    with engine.connect() as conn:
        if "alembic_version" in tables:
            out["version"] = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    return out


def alembic_script(dsn, driver):
    engine = create_engine(url(dsn, driver))
    seen = []
    with tempfile.TemporaryDirectory() as tmp:
        scripts = os.path.join(tmp, "migrations")
        config = Config(os.path.join(tmp, "alembic.ini"))
        config.set_main_option("script_location", scripts)
        config.set_main_option("sqlalchemy.url", url(dsn, driver))
        with contextlib.redirect_stdout(io.StringIO()):
            command.init(config, scripts)
        config = Config(os.path.join(tmp, "alembic.ini"))
        config.set_main_option("script_location", scripts)
        config.set_main_option("sqlalchemy.url", url(dsn, driver))
        versions = os.path.join(scripts, "versions")
        for name, (down, upgrade, downgrade) in REVISIONS.items():
            write_revision(versions, name, down, upgrade, downgrade)
        try:
            command.upgrade(config, "head")
            seen.append(state(engine))
            with engine.connect() as conn:
                # Other tests' tables are not the migrations' business.
                context = MigrationContext.configure(conn, opts={
                    "include_name": lambda name, kind, _: kind != "table" or name.startswith("mig_")})
                seen.append([str(d) for d in compare_metadata(context, models())])
            write_revision(versions, "0003_failing", *FAILING)
            try:
                command.upgrade(config, "head")
                seen.append("failing migration succeeded")
            except Exception as e:
                seen.append(("failed", type(e).__name__))
            seen.append(state(engine))
            os.remove(os.path.join(versions, "0003_failing.py"))
            command.downgrade(config, "0001_accounts")
            seen.append(state(engine))
            command.downgrade(config, "base")
            seen.append(state(engine))
        finally:
            with engine.begin() as conn:
                conn.execute(text("DROP TABLE IF EXISTS mig_half"))
                conn.execute(text("DROP TABLE IF EXISTS mig_accounts"))
                conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
            engine.dispose()
    return seen


def test_alembic_as_postgres(server):
    for driver in ("psycopg", "psycopg2"):
        ours = alembic_script(server.dsn(), driver)
        theirs = alembic_script(reference().dsn(), driver)
        assert ours == theirs, f"{driver}\n  runnel:   {ours}\n  postgres: {theirs}"


# npm packages (dbmate, node-pg-migrate) the test command installs here.
NPM_BIN = os.path.expanduser("~/.cache/runnel-npm/node_modules/.bin")

DBMATE_MIGRATIONS = {
    "20240101000000_create_widgets.sql": """-- migrate:up
CREATE TABLE dbm_widgets (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE INDEX dbm_widgets_name_idx ON dbm_widgets (name);

-- migrate:down
DROP TABLE dbm_widgets;
""",
    "20240102000000_add_price.sql": """-- migrate:up
ALTER TABLE dbm_widgets ADD COLUMN price INTEGER DEFAULT 0 CHECK (price >= 0);
INSERT INTO dbm_widgets (name, price) VALUES ('bolt', 3);

-- migrate:down
ALTER TABLE dbm_widgets DROP COLUMN price;
""",
}

NODE_MIGRATIONS = {
    "1700000000000_create-gadgets.js": """exports.up = (pgm) => {
  pgm.createTable('npm_gadgets', {
    id: 'id',
    name: { type: 'varchar(100)', notNull: true, unique: true },
    weight: { type: 'integer', default: 0, check: 'weight >= 0' },
    created_at: { type: 'timestamp', notNull: true, default: pgm.func('current_timestamp') },
  });
  pgm.createIndex('npm_gadgets', 'weight');
};
exports.down = (pgm) => { pgm.dropTable('npm_gadgets'); };
""",
    "1700000000001_add-color.js": """exports.up = (pgm) => {
  pgm.addColumn('npm_gadgets', { color: { type: 'text' } });
  pgm.renameColumn('npm_gadgets', 'color', 'colour');
  pgm.sql("INSERT INTO npm_gadgets (name, colour) VALUES ('cog', 'red')");
};
exports.down = (pgm) => { pgm.dropColumn('npm_gadgets', 'colour'); };
""",
}


def tool_state(dsn, prefix, version_query):
    """The tool's tables (columns, indexes, rows) and its version table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_name LIKE %s ORDER BY 1", (prefix + "%",))]
        out = {"versions": conn.execute(version_query).fetchall()}
        for table in tables:
            out[table] = {
                "columns": conn.execute(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                    (table,)).fetchall(),
                "indexes": conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY 1", (table,)).fetchall(),
                "rows": conn.execute(f"SELECT name FROM {table} ORDER BY name").fetchall(),
            }
    return out


def run_tool(args, directory, database_url):
    out = subprocess.run(args, cwd=directory, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, DATABASE_URL=database_url))
    return out.returncode == 0, out.stdout + out.stderr


def migration_tool_script(dsn, tool):
    parts = dict(p.split("=", 1) for p in dsn.split())
    database_url = f"postgres://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"
    seen = []
    with tempfile.TemporaryDirectory() as tmp:
        if tool == "dbmate":
            folder = os.path.join(tmp, "db", "migrations")
            files, prefix = DBMATE_MIGRATIONS, "dbm_"
            command_of = {"up": ["up"], "down": ["rollback"]}
            base = [os.path.join(NPM_BIN, "dbmate"), "--no-dump-schema"]
            database_url += "?sslmode=disable"
            versions = "SELECT version FROM schema_migrations ORDER BY 1"
        else:
            folder = os.path.join(tmp, "migrations")
            files, prefix = NODE_MIGRATIONS, "npm_"
            command_of = {"up": ["up"], "down": ["down"]}
            base = [os.path.join(NPM_BIN, "node-pg-migrate")]
            versions = "SELECT name FROM pgmigrations ORDER BY 1"
        os.makedirs(folder)
        for name, body in files.items():
            with open(os.path.join(folder, name), "w") as f:
                f.write(body)
        for step in ["up", "down", "down", "up"]:
            ok, output = run_tool(base + command_of[step], tmp, database_url)
            assert ok, f"{tool} {step} failed:\n{output}"
            seen.append((step, tool_state(dsn, prefix, versions)))
        for step in ["down", "down"]:
            run_tool(base + command_of[step], tmp, database_url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS schema_migrations")
        conn.execute("DROP TABLE IF EXISTS pgmigrations")
    return seen


def test_sql_migration_tools_as_postgres(server):
    for tool in ("dbmate", "node-pg-migrate"):
        ours = migration_tool_script(server.dsn(), tool)
        theirs = migration_tool_script(reference().dsn(), tool)
        assert ours == theirs, f"{tool}\n  runnel:   {ours}\n  postgres: {theirs}"
