"""which local engine answered: answers.engine and handoff_decisions.engine

Revision ID: 0003_engines
Revises: 0007_ux
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_engines"
down_revision: str | None = "0007_ux"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.add_column(sa.Column("engine", sa.String(length=16), nullable=True))
    with op.batch_alter_table("handoff_decisions") as batch:
        batch.add_column(sa.Column("engine", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("handoff_decisions") as batch:
        batch.drop_column("engine")
    with op.batch_alter_table("answers") as batch:
        batch.drop_column("engine")
