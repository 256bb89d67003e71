"""Schema migrations with Alembic, run programmatically at startup (`rag db upgrade` too)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, *, chunking: tuple[int, int] | None = None) -> None:
    """Bring the schema to the newest revision; safe to run on every start. `chunking`
    (chunk tokens, overlap) is recorded for the index versions that existing data gets."""
    cfg = alembic_config(str(engine.url))
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations copy a table and drop the original, which enforced foreign
            # keys refuse; the pragma only works outside a transaction, so set it on the raw
            # connection (autocommit) before SQLAlchemy begins one, and check afterwards.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    # Replicas starting together on an empty database: one migrates, the
                    # others wait here and then find the schema at head. (SQLite's BEGIN
                    # IMMEDIATE already serialises writers.)
                    conn.exec_driver_sql(
                        "SELECT pg_advisory_xact_lock(hashtext('rag-migrate:' || current_schema()))"
                    )
                cfg.attributes["connection"] = conn
                if chunking is not None:
                    cfg.attributes["chunking"] = chunking
                command.upgrade(cfg, "head")
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
