"""how each answer was decoded: answers.decoding (repetition penalty, n-gram ban, length, sampling)

Revision ID: 0008_decoding
Revises: 0003_engines
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_decoding"
down_revision: str | None = "0003_engines"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.add_column(sa.Column("decoding", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.drop_column("decoding")
