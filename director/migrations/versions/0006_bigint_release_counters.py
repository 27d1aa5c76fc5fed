"""Release counters and metadata versions as BIGINT: the integer policy of issue 15
(uptane/policy.py) lets a release counter or a version be anything in 0..2**63-1, and
PostgreSQL's INTEGER stops at 2**31-1 (a signed assignment of such an image answered 500);
and a manifest's encoding as VARCHAR(16): "compact-der" did not fit VARCHAR(8), so every
compact-der manifest answered 500 on PostgreSQL (found by tests/director/test_hostile_manifests.py)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: (table, column, nullable)
COLUMNS = (
    ("assignments", "release_counter", True),
    ("bundles", "targets_version", True),
    ("vehicle_metadata", "targets_version", False),
    ("vehicle_metadata", "snapshot_version", False),
    ("vehicle_metadata", "timestamp_version", False),
)


def _alter(to: type[sa.types.TypeEngine], was: type[sa.types.TypeEngine]) -> None:
    if op.get_bind().dialect.name == "sqlite":
        # an INTEGER column of SQLite holds 64-bit values already; a batch rebuild of these
        # tables would only trip their foreign keys
        return
    for table in dict.fromkeys(t for t, _, _ in COLUMNS):
        with op.batch_alter_table(table) as batch:
            for t, column, nullable in COLUMNS:
                if t == table:
                    batch.alter_column(
                        column, type_=to(), existing_type=was(), existing_nullable=nullable
                    )


def _encoding_width(to: int, was: int) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite does not enforce a VARCHAR's length
    with op.batch_alter_table("manifests") as batch:
        batch.alter_column(
            "encoding", type_=sa.String(to), existing_type=sa.String(was), existing_nullable=False
        )


def upgrade() -> None:
    _alter(sa.BigInteger, sa.Integer)
    _encoding_width(16, 8)


def downgrade() -> None:
    _encoding_width(8, 16)
    _alter(sa.Integer, sa.BigInteger)
