"""organizer overview rollups: per-event counters, votes per minute, energy sums, latency rows; backfilled

Revision ID: 0009_rollups
Revises: 0008_decoding
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_rollups"
down_revision: str | None = "0008_decoding"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _event_id() -> sa.Column:
    return sa.Column("event_id", sa.Integer(), nullable=False)


def _event_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["event_id"], ["events.id"], name=op.f(f"fk_{table}_event_id_events"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "rollup_counts",
        _event_id(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        _event_fk("rollup_counts"),
        sa.PrimaryKeyConstraint("event_id", "kind", "arm", "label", name=op.f("pk_rollup_counts")),
    )
    op.create_table(
        "rollup_votes",
        _event_id(),
        sa.Column("minute", sa.String(19), nullable=False),
        sa.Column("winner_arm", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        _event_fk("rollup_votes"),
        sa.PrimaryKeyConstraint("event_id", "minute", "winner_arm", name=op.f("pk_rollup_votes")),
    )
    op.create_table(
        "rollup_energy",
        _event_id(),
        sa.Column("prompts", sa.BigInteger(), nullable=False),
        sa.Column("local_wh", sa.Float(), nullable=False),
        sa.Column("handoff_wh", sa.Float(), nullable=False),
        sa.Column("handoff_cost", sa.Numeric(18, 6), nullable=False),
        _event_fk("rollup_energy"),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_rollup_energy")),
    )
    op.create_table(
        "rollup_latency",
        sa.Column("answer_id", sa.Integer(), nullable=False),
        _event_id(),
        sa.Column("arm", sa.String(8), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        _event_fk("rollup_latency"),
        sa.ForeignKeyConstraint(
            ["answer_id"], ["answers.id"], name=op.f("fk_rollup_latency_answer_id_answers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("answer_id", name=op.f("pk_rollup_latency")),
    )
    op.create_index("ix_rollup_latency_arm_latency", "rollup_latency", ["arm", "latency_ms", "event_id"])
    op.create_index("ix_rollup_latency_event_arm_latency", "rollup_latency", ["event_id", "arm", "latency_ms"])
    # Backfill from the rows already there, with the same set-based pass bulk writers use.
    from db.rollups import rebuild

    rebuild(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_rollup_latency_event_arm_latency", table_name="rollup_latency")
    op.drop_index("ix_rollup_latency_arm_latency", table_name="rollup_latency")
    for table in ("rollup_latency", "rollup_energy", "rollup_votes", "rollup_counts"):
        op.drop_table(table)
