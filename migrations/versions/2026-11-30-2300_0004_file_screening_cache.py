"""file_screening (screening results cached by sha256 and screening fingerprint) and
fine_tuning_job.validation_attempts (validation off the request path)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import db.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "file_screening",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("summary", _json(), nullable=False),
        sa.Column("decision", _json(), nullable=False),
        sa.Column("results", _json(), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_file_screening_tenant_id_tenant")
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "sha256", "fingerprint", name=op.f("pk_file_screening")
        ),
    )
    with op.batch_alter_table("fine_tuning_job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("validation_attempts", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_job", schema=None) as batch_op:
        batch_op.drop_column("validation_attempts")
    op.drop_table("file_screening")
