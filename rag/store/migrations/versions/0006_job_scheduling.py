"""Job priority, stage and pages for fair scheduling and visible progress (issue 14)

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("filename", sa.String(500), nullable=True))
    op.add_column("jobs", sa.Column("stage", sa.String(16), nullable=True))
    op.add_column("jobs", sa.Column("pages_done", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("pages_total", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_status_priority", "jobs", ["status", "priority", "created_at"])
    op.create_index("ix_jobs_started_at", "jobs", ["started_at"])
    # Background kinds queued before this revision keep their place behind uploads.
    op.execute("UPDATE jobs SET priority = 10 WHERE kind <> 'ingest'")
    op.execute(
        "UPDATE jobs SET filename = (SELECT documents.filename FROM documents "
        "WHERE documents.id = jobs.document_id) WHERE document_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_started_at", table_name="jobs")
    op.drop_index("ix_jobs_status_priority", table_name="jobs")
    for column in ("pages_total", "pages_done", "stage", "filename", "priority"):
        op.drop_column("jobs", column)
