"""ECU report counters: the last accepted counter of ECUs that count instead of sending nonces

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ecus") as batch:
        batch.add_column(sa.Column("last_counter", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ecus") as batch:
        batch.drop_column("last_counter")
