"""Campaigns in bounded transactions (issue 20): a campaign records its members, sends a
wave and releases its ECUs in batches, each its own transaction, so that no manifest waits
behind one campaign for long. What a batch needs to go on after a restart is kept on the
campaign row:

- ``members_cursor``: the highest vehicle id whose selected ECUs are recorded as members
  (NULL: none yet), while the campaign is ``creating``;
- ``members_recorded``: how many members (not skipped) are recorded, which places the next
  one in its wave;
- ``released_at``: when an ended campaign had freed every member's ECU (cancelled what was
  left, cleared ``active_ecu``); NULL while that is still to do.

Campaigns that ended before this revision had released everything at once: they get
``released_at = finished_at``.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("members_cursor", sa.Integer(), nullable=True))
    op.add_column(
        "campaigns",
        sa.Column("members_recorded", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("campaigns", sa.Column("released_at", sa.BigInteger(), nullable=True))
    op.execute("UPDATE campaigns SET released_at = finished_at WHERE finished_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("released_at")
        batch.drop_column("members_recorded")
        batch.drop_column("members_cursor")
