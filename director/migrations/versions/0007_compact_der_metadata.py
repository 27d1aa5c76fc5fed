"""compact-der per-vehicle metadata (issue 13): the Director signs each vehicle's targets,
snapshot and timestamp in compact-der too (docs/der-profile.md), beside JSON and the
standard DER. Rows signed before this migration have NULL there; the Director signs them
again, in every encoding, the first time it serves or changes them.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("targets_compact_der", "snapshot_compact_der", "timestamp_compact_der")


def upgrade() -> None:
    with op.batch_alter_table("vehicle_metadata") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vehicle_metadata") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
