"""Online backup and restore of a whole installation: database, stored files, index snapshots.

    backup.json          what was captured: time, database kind, schema revision, row counts
    rag.db               SQLite: the database file          | tables/<name>.jsonl  PostgreSQL
    files/               stored uploads, as under the data dir
    index/               index snapshots (every knowledge base and version)

Order matters while the service runs: the database first, in one snapshot, then the stored
files, then the index snapshots (`backup` says why).
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, inspect, select, text
from sqlalchemy.engine import make_url

from rag.core.config import Settings
from rag.core.errors import InvalidInput
from rag.store import schema
from rag.store.db import Database
from rag.store.models import Base, Document, KnowledgeBase

log = logging.getLogger(__name__)
MANIFEST = "backup.json"
FORMAT = 1
_BATCH = 1000


@dataclass(frozen=True)
class BackupReport:
    path: Path
    database: str  # "sqlite" | "logical"
    rows: dict[str, int]
    files: int


def backup(settings: Settings, dest: Path) -> BackupReport:
    """Write a consistent backup of the installation to `dest` (a new or empty directory).

    Order matters for consistency while the service runs. The database is captured first, in
    one snapshot: SQLite through its online backup API (a page-exact copy of one committed
    state), PostgreSQL as a logical dump of every table read in one REPEATABLE READ transaction
    (no pg_dump needed on the host, and the dump restores into SQLite or PostgreSQL alike). The
    stored files are copied next: every document in the snapshot already has its file (files
    are written before their document row commits). The index snapshots come last; they are
    caches, so one that changed while being copied is found corrupt at load, moved aside and
    rebuilt from the restored SQL, and one that is behind catches up: search results are those
    of the snapshot.
    """
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput(f"{dest} is not empty; back up into a new directory")
    dest.mkdir(parents=True, exist_ok=True)
    db = Database(settings.sqlalchemy_url)
    try:
        if db.is_sqlite:
            _sqlite_copy(settings.sqlalchemy_url, dest / "rag.db")
            kind = "sqlite"
            counted = Database(f"sqlite:///{dest / 'rag.db'}")
            try:
                rows, revision = _row_counts(counted.engine), _revision(counted.engine)
            finally:
                counted.dispose()
        else:
            kind = "logical"
            rows, revision = _dump_tables(db, dest / "tables")
    finally:
        db.dispose()
    files = _copy_tree(settings.files_dir, dest / "files")
    _copy_tree(settings.index_dir, dest / "index")
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "database": kind,
        "schema_revision": revision,
        "rows": rows,
        "files": files,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info("backup written to %s: %s, %d files", dest, rows, files)
    return BackupReport(dest, kind, rows, files)


def restore(settings: Settings, src: Path) -> BackupReport:
    """Restore a backup into the configured data dir and database, which must be empty."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{src} is not a backup ({MANIFEST} unreadable: {exc})") from exc
    if manifest.get("format") != FORMAT:
        raise InvalidInput(f"backup format {manifest.get('format')} is not supported")
    _refuse_non_empty(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.sqlalchemy_url)
    try:
        if manifest["database"] == "sqlite" and db.is_sqlite:
            db.dispose()
            target = Path(make_url(settings.sqlalchemy_url).database or "")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            _sqlite_copy(f"sqlite:///{src / 'rag.db'}", target)
            db = Database(settings.sqlalchemy_url)
            schema.upgrade(db.engine)  # a backup from an older release gains newer columns
        else:
            if manifest["database"] == "sqlite":
                _dump_sqlite_to_tables(src / "rag.db", src / "tables.tmp")
                _load_tables(db, src / "tables.tmp")
                shutil.rmtree(src / "tables.tmp")
            else:
                _load_tables(db, src / "tables")
        rows = _row_counts(db.engine)
    finally:
        db.dispose()
    for table, count in manifest["rows"].items():
        if rows.get(table) != count:
            raise InvalidInput(f"restored {rows.get(table)} rows of {table}, expected {count}")
    files = _copy_tree(src / "files", settings.files_dir)
    _copy_tree(src / "index", settings.index_dir)
    log.info("restored %s into %s", src, settings.data_dir)
    return BackupReport(src, manifest["database"], rows, files)


# -- database --------------------------------------------------------------------------------


def _sqlite_copy(url: str, target: Path) -> None:
    source_path = make_url(url).database
    target.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=60)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)  # one committed state, even while writers continue
    finally:
        copy.close()
        source.close()


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }


def _dump_tables(db: Database, out: Path) -> tuple[dict[str, int], str | None]:
    out.mkdir(parents=True)
    rows: dict[str, int] = {}
    with db.snapshot() as session:
        conn = session.connection()
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        for table in Base.metadata.sorted_tables:
            count = 0
            with (out / f"{table.name}.jsonl").open("w") as fh:
                result = conn.execution_options(yield_per=_BATCH).execute(select(table))
                for row in result.mappings():
                    fh.write(json.dumps({k: _encode(v) for k, v in row.items()}) + "\n")
                    count += 1
            rows[table.name] = count
    return rows, revision


def _dump_sqlite_to_tables(path: Path, out: Path) -> None:
    source = Database(f"sqlite:///{path}")
    try:
        _dump_tables(source, out)
    finally:
        source.dispose()


def _load_tables(db: Database, src: Path) -> None:
    schema.upgrade(db.engine)
    with db.write() as session:
        conn = session.connection()
        for table in reversed(Base.metadata.sorted_tables):  # rows a fresh schema seeds
            conn.execute(table.delete())
        for table in Base.metadata.sorted_tables:  # parents before children
            path = src / f"{table.name}.jsonl"
            if not path.exists():
                continue
            types = {c.name: c.type for c in table.columns}
            batch: list[dict[str, Any]] = []
            with path.open() as fh:
                for line in fh:
                    raw = json.loads(line)
                    batch.append({k: _decode(v, types.get(k)) for k, v in raw.items()})
                    if len(batch) >= _BATCH:
                        conn.execute(insert(table), batch)
                        batch = []
            if batch:
                conn.execute(insert(table), batch)
        if not db.is_sqlite:
            _reset_identities(conn)


def _reset_identities(conn: Any) -> None:
    """After explicit ids were inserted, move PostgreSQL's sequences past them."""
    for table in Base.metadata.sorted_tables:
        for column in table.primary_key.columns:
            if column.autoincrement is True or (
                column.autoincrement == "auto" and column.type.python_type is int
            ):
                seq = conn.execute(
                    text("SELECT pg_get_serial_sequence(:t, :c)"),
                    {"t": table.name, "c": column.name},
                ).scalar()
                if seq:
                    conn.execute(
                        text(
                            f"SELECT setval('{seq}', COALESCE((SELECT MAX({column.name}) "
                            f"FROM {table.name}), 0) + 1, false)"
                        )
                    )


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime | date):
        return {"$time": value.isoformat()}
    return value


def _decode(value: Any, _type: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        if "$b64" in value:
            return base64.b64decode(value["$b64"])
        if "$time" in value:
            return datetime.fromisoformat(value["$time"])
    return value


# -- files -------------------------------------------------------------------------------------


def _copy_tree(src: Path, dest: Path) -> int:
    """Copy regular files under `src` (those that vanish mid-copy are skipped); returns count."""
    count = 0
    if not src.exists():
        return 0
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, target)
        except FileNotFoundError:
            continue  # replaced or deleted while we copied: a cache file, or a deleted upload
        count += 1
    return count


def _refuse_non_empty(settings: Settings) -> None:
    for folder in (settings.files_dir, settings.index_dir):
        if folder.exists() and any(p.is_file() for p in folder.rglob("*")):
            raise InvalidInput(f"{folder} is not empty; restore into an empty installation")
    db = Database(settings.sqlalchemy_url)
    try:
        with db.engine.connect() as conn:
            if not inspect(conn).has_table(KnowledgeBase.__tablename__):
                return
            kbs = conn.execute(select(func.count()).select_from(KnowledgeBase)).scalar_one()
            docs = conn.execute(select(func.count()).select_from(Document)).scalar_one()
        if kbs or docs:
            raise InvalidInput("the target database is not empty; restore into an empty one")
    finally:
        db.dispose()
