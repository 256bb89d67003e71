"""API keys, the audit log and knowledge-base tenants (issue 6: keys, tenancy, audit)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _swap_name_uniqueness(old: tuple[str, list[str]], new: tuple[str, list[str]]) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite cannot drop a constraint: batch mode copies the table, and the naming
        # convention gives 0001's unnamed UNIQUE(name) a name to drop it by.
        convention = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
        with op.batch_alter_table("knowledge_bases", naming_convention=convention) as batch:
            batch.drop_constraint(old[0], type_="unique")
            batch.create_unique_constraint(new[0], new[1])
    else:
        op.drop_constraint(old[0], "knowledge_bases", type_="unique")
        op.create_unique_constraint(new[0], "knowledge_bases", new[1])


def upgrade() -> None:
    op.add_column(
        "knowledge_bases",
        sa.Column("tenant_id", sa.String(64), nullable=False, server_default="default"),
    )
    old_name = (
        "uq_knowledge_bases_name"
        if op.get_bind().dialect.name == "sqlite"
        else "knowledge_bases_name_key"
    )
    _swap_name_uniqueness(
        (old_name, ["name"]), ("uq_knowledge_bases_tenant_name", ["tenant_id", "name"])
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("kb_ids", sa.JSON(), nullable=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("concurrent_generations", sa.Integer(), nullable=True),
        sa.Column("upload_bytes_per_day", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant_id"])
    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_events_tenant_at", "audit_events", ["tenant_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_tenant_at", "audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_api_keys_tenant", "api_keys")
    op.drop_table("api_keys")
    new_name = (
        "uq_knowledge_bases_name"
        if op.get_bind().dialect.name == "sqlite"
        else "knowledge_bases_name_key"
    )
    _swap_name_uniqueness(
        ("uq_knowledge_bases_tenant_name", ["tenant_id", "name"]), (new_name, ["name"])
    )
    with op.batch_alter_table("knowledge_bases") as batch:
        batch.drop_column("tenant_id")
