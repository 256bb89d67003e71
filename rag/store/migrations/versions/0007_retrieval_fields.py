"""Per-chunk page marks, per-knowledge-base lexical terms and relevance threshold (issue 18)

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Chunks made before this revision span their pages without marks: they report page_start.
    op.add_column("chunks", sa.Column("page_marks", sa.JSON(), nullable=False, server_default="[]"))
    op.add_column(
        "knowledge_bases",
        sa.Column("lexical_terms", sa.JSON(), nullable=False, server_default="[]"),
    )
    op.add_column("knowledge_bases", sa.Column("relevance_threshold", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("knowledge_bases", "relevance_threshold")
    op.drop_column("knowledge_bases", "lexical_terms")
    op.drop_column("chunks", "page_marks")
