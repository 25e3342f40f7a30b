"""stable uids on every research table, for ``handoff merge``; turn slots (started turns)

Revision ID: 0004_hall
Revises: 0001
Create Date: 2026-11-26 04:00:00

Existing rows get a fresh uuid4 each (backfilled in chunks), then the column becomes NOT NULL and
unique. ``turn_slots`` holds every started turn: the prompt rate limit and the per-event cap on
running turns count it, in the database every replica shares. Downgrade drops both again.
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_hall"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("events", "participants", "conversations", "turns", "handoff_decisions", "answers", "votes", "ratings")
CHUNK = 10_000


def upgrade() -> None:
    op.create_table(
        "turn_slots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_turn_slots_event_id_events"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_turn_slots_participant_id_participants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_turn_slots")),
    )
    op.create_index(op.f("ix_turn_slots_event_id"), "turn_slots", ["event_id"], unique=False)
    op.create_index(op.f("ix_turn_slots_participant_id"), "turn_slots", ["participant_id"], unique=False)
    bind = op.get_bind()
    for name in TABLES:
        with op.batch_alter_table(name) as batch:
            batch.add_column(sa.Column("uid", sa.String(length=36), nullable=True))
        table = sa.table(name, sa.column("id", sa.Integer), sa.column("uid", sa.String))
        fill = table.update().where(table.c.id == sa.bindparam("row_id")).values(uid=sa.bindparam("row_uid"))
        last = 0
        while (
            ids := bind.execute(sa.select(table.c.id).where(table.c.id > last).order_by(table.c.id).limit(CHUNK))
            .scalars()
            .all()
        ):
            bind.execute(fill, [{"row_id": row_id, "row_uid": str(uuid.uuid4())} for row_id in ids])
            last = ids[-1]
        with op.batch_alter_table(name) as batch:
            batch.alter_column("uid", existing_type=sa.String(length=36), nullable=False)
            batch.create_unique_constraint(op.f(f"uq_{name}_uid"), ["uid"])


def downgrade() -> None:
    op.drop_table("turn_slots")
    for name in reversed(TABLES):
        with op.batch_alter_table(name) as batch:
            batch.drop_constraint(op.f(f"uq_{name}_uid"), type_="unique")
            batch.drop_column("uid")
