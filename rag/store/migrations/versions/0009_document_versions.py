"""Document versions: a stable key, a revision and a current flag; attachments' parent (issue 17)

A document that existed before gets its filename as its key, revision 1, current. Where one
knowledge base holds several documents of one filename, the newest gets the key and the older
ones none (they stay separate documents without versions), since only one may be current.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNSUPERSEDED = sa.text("status != 'superseded'")
_CURRENT = sa.text("is_current")

# The newest document of each filename in its knowledge base takes the filename as its key.
_KEYS = sa.text(
    "UPDATE documents SET doc_key = filename WHERE NOT EXISTS ("
    " SELECT 1 FROM documents AS newer"
    " WHERE newer.kb_id = documents.kb_id AND newer.filename = documents.filename"
    " AND (newer.created_at > documents.created_at"
    " OR (newer.created_at = documents.created_at AND newer.id > documents.id)))"
)


def upgrade() -> None:
    # SQLite cannot drop a constraint in place: batch mode copies the table.
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("doc_key", sa.String(500), nullable=True))
        batch.add_column(sa.Column("external_id", sa.String(500), nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(
            sa.Column("is_current", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("parent_id", sa.String(32), nullable=True))
        batch.create_foreign_key("fk_documents_parent_id", "documents", ["parent_id"], ["id"])
        batch.drop_constraint("uq_documents_kb_sha256", type_="unique")
    op.create_index("ix_documents_parent_id", "documents", ["parent_id"])
    op.execute(_KEYS)
    op.create_index(
        "uq_documents_kb_sha256_unsuperseded",
        "documents",
        ["kb_id", "sha256"],
        unique=True,
        sqlite_where=_UNSUPERSEDED,
        postgresql_where=_UNSUPERSEDED,
    )
    op.create_index(
        "uq_documents_kb_key_current",
        "documents",
        ["kb_id", "doc_key"],
        unique=True,
        sqlite_where=_CURRENT,
        postgresql_where=_CURRENT,
    )
    op.create_index(
        "uq_documents_kb_key_revision", "documents", ["kb_id", "doc_key", "revision"], unique=True
    )


def downgrade() -> None:
    # Older versions go with their chunks already gone; only one document per bytes may stay.
    op.execute(sa.text("DELETE FROM documents WHERE status = 'superseded' OR NOT is_current"))
    op.drop_index("uq_documents_kb_key_revision", "documents")
    op.drop_index("uq_documents_kb_key_current", "documents")
    op.drop_index("uq_documents_kb_sha256_unsuperseded", "documents")
    op.drop_index("ix_documents_parent_id", "documents")
    with op.batch_alter_table("documents") as batch:
        batch.create_unique_constraint("uq_documents_kb_sha256", ["kb_id", "sha256"])
        batch.drop_constraint("fk_documents_parent_id", type_="foreignkey")
        batch.drop_column("parent_id")
        batch.drop_column("is_current")
        batch.drop_column("revision")
        batch.drop_column("external_id")
        batch.drop_column("doc_key")
