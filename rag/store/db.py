"""Engine and sessions. SQLite by default (WAL, full fsync), PostgreSQL in production.

SQLite: pysqlite's deferred BEGIN lets two writers both read and then fail to upgrade their lock
("database is locked") regardless of busy_timeout. Write transactions therefore go through a
second engine whose transactions start with BEGIN IMMEDIATE, so writers queue instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # a committed document survives power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Owns the engines; `read()` and `write()` hand out sessions that commit or roll back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(url, immediate=False)
            self._write_engine = _sqlite_engine(url, immediate=True)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            self._write_engine = self.engine
        self._read_factory = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite's deferred BEGIN already pins a WAL snapshot at the first read; PostgreSQL's
        # default READ COMMITTED would let each statement see newer commits.
        snapshot_engine = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="REPEATABLE READ")
        )
        self._snapshot_factory = sessionmaker(snapshot_engine, expire_on_commit=False)
        self._write_factory = sessionmaker(self._write_engine, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read_factory() as session:
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read session whose statements all see the same committed state."""
        with self._snapshot_factory() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._write_factory() as session, session.begin():
            yield session

    def now(self) -> datetime:
        return datetime.now(UTC)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._write_engine is not self.engine:
            self._write_engine.dispose()


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched: zero when another writer settled the matter first."""
    return int(cast(CursorResult[Any], result).rowcount)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes even for timezone=True columns; treat them as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
