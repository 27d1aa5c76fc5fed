"""Attack indicators already seen: the Primary's last manifest-level indicator per vehicle,
and per assignment the ECU's indicator that was there before its bundle went out

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vehicles") as batch:
        batch.add_column(sa.Column("last_attack", sa.Text(), nullable=True))
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("stale_attack", sa.Text(), nullable=True))
    # An assignment in flight now cannot have seen its ECU's last indicator arrive after
    # its bundle went out (that manifest would have failed it), so that indicator is stale.
    op.execute(
        "UPDATE assignments SET stale_attack = "
        "(SELECT ecus.last_attack FROM ecus WHERE ecus.id = assignments.ecu_id) "
        "WHERE state = 'in_flight'"
    )


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("stale_attack")
    with op.batch_alter_table("vehicles") as batch:
        batch.drop_column("last_attack")
