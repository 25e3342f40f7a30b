"""energy per answer; public results wall per event

Revision ID: 0007_ux
Revises: 0005_security
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_ux"
down_revision: str | None = "0005_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.add_column(sa.Column("energy_wh", sa.Float(), nullable=True))
        batch.add_column(sa.Column("energy_method", sa.String(length=120), nullable=True))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("wall_enabled", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("wall_enabled")
    with op.batch_alter_table("answers") as batch:
        batch.drop_column("energy_method")
        batch.drop_column("energy_wh")
