"""Replicas that start together on an empty database migrate it once, without failing."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from rag.store import schema
from rag.store.models import Base
from tests.conftest import postgres_schema


def test_replicas_migrating_an_empty_postgres_schema_at_once() -> None:
    with postgres_schema("mig") as url:
        engines = [sa.create_engine(url) for _ in range(4)]
        start = threading.Barrier(len(engines))
        errors: list[BaseException] = []

        def run(engine: sa.Engine) -> None:
            start.wait()
            try:
                schema.upgrade(engine)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        try:
            assert errors == []
            with engines[0].connect() as conn:
                tables = set(sa.inspect(conn).get_table_names())
                heads = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            assert set(Base.metadata.tables) <= tables
            assert len(heads) == 1
        finally:
            for e in engines:
                e.dispose()
