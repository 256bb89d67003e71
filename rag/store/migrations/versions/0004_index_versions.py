"""index versions (issue 5: zero-downtime re-indexing with rollback)

Every existing knowledge base gets version 1, live, holding its existing chunks, with the
chunking that was configured when this migration ran (the best record there is of it).

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "index_versions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kb_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("embedding_model", sa.String(length=500), nullable=False),
        sa.Column("embedding_dim", sa.Integer(), nullable=False),
        sa.Column("chunk_tokens", sa.Integer(), nullable=False),
        sa.Column("overlap_tokens", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["kb_id"], ["knowledge_bases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kb_id", "number", name="uq_index_versions_kb_number"),
    )
    with op.batch_alter_table("knowledge_bases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("live_version", sa.Integer(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch_op.drop_constraint("uq_chunks_document_ordinal", type_="unique")
        batch_op.create_unique_constraint(
            "uq_chunks_document_version_ordinal", ["document_id", "version", "ordinal"]
        )
        batch_op.create_index("ix_chunks_kb_version_seq", ["kb_id", "version", "seq"])

    # rag.store.schema passes the running service's chunking; 256/0 are the defaults otherwise.
    config = op.get_context().config
    attributes = config.attributes if config is not None else {}
    chunk_tokens, overlap_tokens = attributes.get("chunking", (256, 0))
    kbs = sa.table(
        "knowledge_bases",
        sa.column("id", sa.String),
        sa.column("embedding_model", sa.String),
        sa.column("embedding_dim", sa.Integer),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    rows = op.get_bind().execute(
        sa.select(kbs.c.id, kbs.c.embedding_model, kbs.c.embedding_dim, kbs.c.created_at)
    )
    versions = sa.table(
        "index_versions",
        sa.column("kb_id", sa.String),
        sa.column("number", sa.Integer),
        sa.column("embedding_model", sa.String),
        sa.column("embedding_dim", sa.Integer),
        sa.column("chunk_tokens", sa.Integer),
        sa.column("overlap_tokens", sa.Integer),
        sa.column("status", sa.String),
        sa.column("checks", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("activated_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    values = [
        {
            "kb_id": r.id,
            "number": 1,
            "embedding_model": r.embedding_model,
            "embedding_dim": r.embedding_dim,
            "chunk_tokens": chunk_tokens,
            "overlap_tokens": overlap_tokens,
            "status": "live",
            "checks": {},
            "created_at": r.created_at or now,
            "activated_at": r.created_at or now,
        }
        for r in rows
    ]
    if values:
        op.bulk_insert(versions, values)


def downgrade() -> None:
    # Only the live version's chunks can stay: the old schema has no room for the others.
    op.execute(
        "DELETE FROM chunks WHERE version <> (SELECT live_version FROM knowledge_bases "
        "WHERE knowledge_bases.id = chunks.kb_id)"
    )
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_chunks_kb_version_seq")
        batch_op.drop_constraint("uq_chunks_document_version_ordinal", type_="unique")
        batch_op.create_unique_constraint("uq_chunks_document_ordinal", ["document_id", "ordinal"])
        batch_op.drop_column("version")
    with op.batch_alter_table("knowledge_bases", schema=None) as batch_op:
        batch_op.drop_column("live_version")
    op.drop_table("index_versions")
