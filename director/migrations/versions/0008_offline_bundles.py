"""Offline update bundles (issue 18): each vehicle's bundle carried on a USB stick, when
it was made, until when its metadata holds, the targets and timestamp versions it carries
and the file's SHA-256 (director/offline.py).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

WIDE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "offline_bundles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=False),
        sa.Column("bundle_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("targets_version", WIDE, nullable=False),
        sa.Column("timestamp_version", WIDE, nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["vehicle_id"], ["vehicles.id"], name="fk_offline_bundles_vehicle_id_vehicles"
        ),
        sa.ForeignKeyConstraint(
            ["bundle_id"], ["bundles.id"], name="fk_offline_bundles_bundle_id_bundles"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_offline_bundles"),
    )
    op.create_index(
        "ix_offline_bundles_vehicle_id", "offline_bundles", ["vehicle_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_offline_bundles_vehicle_id", table_name="offline_bundles")
    op.drop_table("offline_bundles")
