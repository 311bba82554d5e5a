"""SQLAlchemy 2 over both Postgres drivers (psycopg 3 and psycopg2), side
by side with a real PostgreSQL: `create_all` of default models (serial
keys, unique, index, check), an ORM round trip with an upsert, and full
reflection (`inspect`: columns, keys, indexes, constraints, views)."""

from sqlalchemy import CheckConstraint, MetaData, String, create_engine, inspect, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from differential import reference


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "orm_customers"
    __table_args__ = (CheckConstraint("age >= 0", name="orm_age_positive"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(100), unique=True)
    age: Mapped[int] = mapped_column(index=True, nullable=True)
    visits: Mapped[int] = mapped_column(default=0, server_default="0")


def url(dsn, driver):
    """A SQLAlchemy URL for a libpq `dsn` (host, port, user, dbname)."""
    parts = dict(p.split("=", 1) for p in dsn.split())
    return (f"postgresql+{driver}://{parts['user']}@{parts['host']}:{parts['port']}"
            f"/{parts['dbname']}")


def sqlstate(error):
    """The SQLSTATE of a SQLAlchemy error, from either driver."""
    return getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)


def reflection(engine):
    """What `inspect` and `MetaData.reflect` tell of the ORM's tables and a
    view, types by their repr (the view's text is Postgres's own
    formatting, so only its presence is compared)."""
    inspector = inspect(engine)
    out = {}
    for table in ("orm_customers",):
        out[table] = {
            "columns": [{**c, "type": repr(c["type"])} for c in inspector.get_columns(table)],
            "pk": inspector.get_pk_constraint(table),
            "indexes": sorted(inspector.get_indexes(table), key=lambda i: i["name"]),
            "unique": inspector.get_unique_constraints(table),
            "checks": inspector.get_check_constraints(table),
            "foreign_keys": inspector.get_foreign_keys(table),
            "comment": inspector.get_table_comment(table),
        }
    out["views"] = [v for v in inspector.get_view_names() if v.startswith("orm_")]
    out["view_columns"] = [(c["name"], repr(c["type"])) for c in inspector.get_columns("orm_adults")]
    out["view_definition"] = bool(inspector.get_view_definition("orm_adults"))
    metadata = MetaData()
    metadata.reflect(engine, only=["orm_customers"])
    reflected = metadata.tables["orm_customers"]
    out["reflected"] = [(c.name, repr(c.type), c.nullable, c.primary_key) for c in reflected.columns]
    out["reflected_indexes"] = sorted((i.name, i.unique, [c.name for c in i.columns]) for i in reflected.indexes)
    return out


def orm_script(dsn, driver):
    engine = create_engine(url(dsn, driver))
    seen = []
    try:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all([
                Customer(name="ann", email="ann@example.com", age=31),
                Customer(name="bob", email="bob@example.com"),
            ])
            session.commit()
            rows = session.scalars(select(Customer).order_by(Customer.id)).all()
            seen.append([(c.id, c.name, c.email, c.age, c.visits) for c in rows])
            rows[0].visits += 1
            session.delete(rows[1])
            session.commit()
            session.add(Customer(name="dup", email="ann@example.com"))
            try:
                session.commit()
            except Exception as e:  # the driver's UniqueViolation, wrapped
                seen.append(("duplicate", type(e).__name__, sqlstate(e)))
                session.rollback()
            session.add(Customer(name="neg", email="neg@example.com", age=-1))
            try:
                session.commit()
            except Exception as e:
                seen.append(("check", type(e).__name__, sqlstate(e)))
                session.rollback()
            upsert = insert(Customer).values(name="ann", email="ann@example.com", age=32)
            upsert = upsert.on_conflict_do_update(
                index_elements=["email"], set_={"age": upsert.excluded.age, "visits": Customer.visits + 10})
            session.execute(upsert)
            session.execute(insert(Customer).values(name="x", email="bob2@example.com").on_conflict_do_nothing())
            session.commit()
            seen.append(session.execute(
                select(Customer.name, Customer.email, Customer.age, Customer.visits).order_by(Customer.email)).all())
        with engine.begin() as conn:
            conn.execute(text("CREATE VIEW orm_adults AS SELECT id, age FROM orm_customers WHERE age >= 18"))
        seen.append(reflection(engine))
        inspector = inspect(engine)
        seen.append(sorted(t for t in inspector.get_table_names() if t.startswith("orm_")))
        seen.append(inspector.has_table("orm_customers"))
        with engine.begin() as conn:
            conn.execute(text("DROP VIEW orm_adults"))
        Base.metadata.drop_all(engine)
        seen.append(inspect(engine).has_table("orm_customers"))
    finally:
        engine.dispose()
    return seen


def test_sqlalchemy_orm_as_postgres(server):
    for driver in ("psycopg", "psycopg2"):
        ours = orm_script(server.dsn(), driver)
        theirs = orm_script(reference().dsn(), driver)
        assert ours == theirs, f"{driver}\n  runnel:   {ours}\n  postgres: {theirs}"
