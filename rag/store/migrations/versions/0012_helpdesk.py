"""Helpdesk tables: assistants and their versions, the question log (feedback, hand-offs),
curated answers, golden rows, widget keys, bots, bot threads and seen callback nonces

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _at(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _kb() -> sa.Column:
    return sa.Column(
        "kb_id",
        sa.String(32),
        sa.ForeignKey("knowledge_bases.id", ondelete="CASCADE"),
        nullable=False,
    )


def _assistant(primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "assistant_id",
        sa.String(32),
        sa.ForeignKey("assistants.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def _bot() -> sa.Column:
    return sa.Column(
        "bot_id",
        sa.String(32),
        sa.ForeignKey("bots.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=True,
    )


def upgrade() -> None:
    op.create_table(
        "assistants",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        _kb(),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_assistants_tenant_name"),
    )
    op.create_table(
        "assistant_versions",
        _assistant(primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        _at("created_at"),
    )
    op.create_table(
        "question_log",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        _kb(),
        sa.Column("assistant_id", sa.String(32), nullable=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("citations", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(500), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("grounded", sa.Boolean(), nullable=False),
        sa.Column("covered", sa.Boolean(), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("curated", sa.Boolean(), nullable=False),
        sa.Column("conversation_id", sa.String(32), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        _at("rated_at", nullable=True),
        _at("handoff_at", nullable=True),
        sa.Column("handoff_reason", sa.Text(), nullable=True),
        _at("created_at"),
    )
    op.create_index("ix_question_log_tenant_at", "question_log", ["tenant_id", "created_at"])
    op.create_index("ix_question_log_kb_at", "question_log", ["kb_id", "created_at"])
    op.create_table(
        "curated_answers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        _kb(),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("question_key", sa.String(64), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("citations", sa.JSON(), nullable=False),
        sa.Column("source_question_id", sa.String(32), nullable=True),
        _at("created_at"),
        sa.UniqueConstraint("kb_id", "question_key", name="uq_curated_kb_question"),
    )
    op.create_table(
        "golden_rows",
        sa.Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
        _kb(),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer_excerpt", sa.Text(), nullable=True),
        sa.Column("filename", sa.String(1000), nullable=True),
        sa.Column("pages", sa.JSON(), nullable=False),
        sa.Column("source_question_id", sa.String(32), nullable=True),
        _at("created_at"),
    )
    op.create_index("ix_golden_rows_kb", "golden_rows", ["kb_id", "id"])
    op.create_table(
        "widget_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        _assistant(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("allowed_origins", sa.JSON(), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=False),
        _at("created_at"),
        _at("revoked_at", nullable=True),
    )
    op.create_index("ix_widget_keys_tenant", "widget_keys", ["tenant_id"])
    op.create_table(
        "bots",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        _assistant(),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("credentials", sa.JSON(), nullable=False),
        sa.Column("api_base", sa.String(2000), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _at("created_at"),
    )
    op.create_index("ix_bots_tenant", "bots", ["tenant_id"])
    op.create_table(
        "bot_threads",
        _bot(),
        sa.Column("thread_key", sa.String(300), primary_key=True),
        sa.Column("conversation_id", sa.String(32), nullable=False),
        _at("updated_at"),
    )
    op.create_table(
        "bot_nonces",
        _bot(),
        sa.Column("nonce", sa.String(200), primary_key=True),
        _at("seen_at"),
    )
    op.create_index("ix_bot_nonces_seen", "bot_nonces", ["seen_at"])


def downgrade() -> None:
    for table in (
        "bot_nonces",
        "bot_threads",
        "bots",
        "widget_keys",
        "golden_rows",
        "curated_answers",
        "question_log",
        "assistant_versions",
        "assistants",
    ):
        op.drop_table(table)
