"""research: style features and origin flag per answer, time-to-vote and display per vote,
latency-fair event setting, LLM judge verdicts

Revision ID: 0006_research
Revises: 0004_hall
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_research"
down_revision: str | None = "0004_hall"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("latency_fair", sa.Boolean(), server_default="0", nullable=False))
    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("style", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("reveals_origin", sa.Boolean(), nullable=True))
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_to_vote_ms", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("display", sa.String(length=8), nullable=True))
        batch_op.create_check_constraint("display", "display IS NULL OR display IN ('live', 'fair')")
    op.create_table(
        "judge_verdicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vote_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("base_url_host", sa.String(length=200), nullable=True),
        sa.Column("order", sa.String(length=16), nullable=False),
        sa.Column("winner_arm", sa.String(length=16), nullable=True),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("cost", sa.Numeric(precision=12, scale=6), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("\"order\" IN ('on_first', 'off_first')", name=op.f("ck_judge_verdicts_order")),
        sa.CheckConstraint(
            "winner_arm IS NULL OR winner_arm IN ('on', 'off', 'tie')", name=op.f("ck_judge_verdicts_winner_arm")
        ),
        sa.ForeignKeyConstraint(
            ["vote_id"], ["votes.id"], name=op.f("fk_judge_verdicts_vote_id_votes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_judge_verdicts")),
        sa.UniqueConstraint("vote_id", "model", "order", name="vote_model_order"),
    )
    with op.batch_alter_table("judge_verdicts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_judge_verdicts_vote_id"), ["vote_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("judge_verdicts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_judge_verdicts_vote_id"))
    op.drop_table("judge_verdicts")
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.drop_constraint("ck_votes_display", type_="check")
        batch_op.drop_column("display")
        batch_op.drop_column("time_to_vote_ms")
    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.drop_column("reveals_origin")
        batch_op.drop_column("style")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("latency_fair")
