"""lifecycle columns, labels, audit log, keys allowed drafts

Revision ID: 0003_lifecycle
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_lifecycle"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prompt_versions") as batch:
        batch.add_column(sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("state_changed_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("deprecated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("sunset_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("successor", sa.Integer(), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("allow_drafts", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "prompt_labels",
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name=op.f("fk_prompt_labels_prompt_id_prompts")
        ),
        sa.PrimaryKeyConstraint("prompt_id", "label", name=op.f("pk_prompt_labels")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("prompt", sa.String(length=64), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_action_id"), "audit_log", ["action", "id"])
    op.create_index(op.f("ix_audit_log_actor_id"), "audit_log", ["actor", "id"])
    op.create_index(op.f("ix_audit_log_prompt_id"), "audit_log", ["prompt", "id"])
    op.create_index(op.f("ix_audit_log_created_at"), "audit_log", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_log_created_at"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_prompt_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_actor_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_action_id"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("prompt_labels")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("allow_drafts")
    with op.batch_alter_table("prompt_versions") as batch:
        batch.drop_column("successor")
        batch.drop_column("sunset_at")
        batch.drop_column("deprecated_at")
        batch.drop_column("state_changed_by")
        batch.drop_column("state_changed_at")
