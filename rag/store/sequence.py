"""Commit-ordered sequence numbers for chunks and tombstones.

An autoincrement id is not enough for catch-up: on PostgreSQL, id 10 can commit after id 11 is
already visible, and a replica that has applied 11 would never see 10. Taking the counter row's
lock inside the writing transaction serialises writers, so seq order equals commit order.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rag.store.models import Counter

CHUNK_SEQ = "chunk_seq"


def allocate(session: Session, count: int, name: str = CHUNK_SEQ) -> range:
    """Reserve `count` consecutive numbers inside the caller's transaction."""
    stmt = (
        update(Counter)
        .where(Counter.name == name)
        .values(value=Counter.value + count)
        .returning(Counter.value)
    )
    last = session.execute(stmt).scalar_one()
    return range(last - count + 1, last + 1)


def current(session: Session, name: str = CHUNK_SEQ) -> int:
    return session.execute(select(Counter.value).where(Counter.name == name)).scalar_one()
