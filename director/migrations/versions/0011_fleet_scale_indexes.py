"""Fleet scale (issue 20): an index for every lookup the Director makes by a column that
had none. A campaign's insert looked up each ECU's assignments by ``ecu_id`` with a scan
of ``assignments`` (0.33 s at 1k vehicles, 1.69 s at 4k); a bundle's assignments, a
campaign's members by ECU or assignment, an attack's manifest, and the retention policy's
prune by age (``nonces.seen_at``, ``manifests.received_at``) had the same problem.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: (table, column) pairs indexed by this revision; names follow the naming convention
INDEXED = (
    ("assignments", "ecu_id"),
    ("assignments", "bundle_id"),
    ("assignments", "campaign_id"),
    ("campaign_members", "ecu_id"),
    ("campaign_members", "assignment_id"),
    ("attacks", "manifest_id"),
    ("attacks", "ecu_id"),
    ("nonces", "seen_at"),
    ("manifests", "received_at"),
)


def upgrade() -> None:
    for table, column in INDEXED:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def downgrade() -> None:
    for table, column in reversed(INDEXED):
        op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
