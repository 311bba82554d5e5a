"""Migration tools against Runnel and a real PostgreSQL 15, compared:
Alembic (upgrade, downgrade, an autogenerate check that finds the schema
equal to the models, a failing migration that leaves no trace)."""

import contextlib
import io
import os
import tempfile
import textwrap

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
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
