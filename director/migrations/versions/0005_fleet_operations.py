"""Fleet operations (issue 14): unreachable ECUs, reported release counters, dependencies
between assignments, campaigns in waves, and saved groups of vehicles

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_groups_name")),
    )
    op.create_table(
        "group_vehicles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_vehicles_group_id_groups")
        ),
        sa.ForeignKeyConstraint(
            ["vehicle_id"], ["vehicles.id"], name=op.f("fk_group_vehicles_vehicle_id_vehicles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_vehicles")),
        sa.UniqueConstraint("group_id", "vehicle_id", name="uq_group_vehicles_group_vehicle"),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("target_path", sa.Text(), nullable=False),
        sa.Column("hardware_id", sa.String(length=256), nullable=True),
        sa.Column("selection", sa.Text(), nullable=False),
        sa.Column("waves", sa.Text(), nullable=False),
        sa.Column("soak_seconds", sa.BigInteger(), nullable=False),
        sa.Column("failure_threshold", sa.Float(), nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("current_wave", sa.Integer(), nullable=False),
        sa.Column("wave_started_at", sa.BigInteger(), nullable=True),
        sa.Column("wave_done_at", sa.BigInteger(), nullable=True),
        sa.Column("resumed_wave", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index(op.f("ix_campaigns_state"), "campaigns", ["state"], unique=False)
    op.create_table(
        "campaign_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=False),
        sa.Column("ecu_id", sa.Integer(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("active_ecu", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignment_id"],
            ["assignments.id"],
            name=op.f("fk_campaign_members_assignment_id_assignments"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_members_campaign_id_campaigns"),
        ),
        sa.ForeignKeyConstraint(
            ["ecu_id"], ["ecus.id"], name=op.f("fk_campaign_members_ecu_id_ecus")
        ),
        sa.ForeignKeyConstraint(
            ["vehicle_id"],
            ["vehicles.id"],
            name=op.f("fk_campaign_members_vehicle_id_vehicles"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_members")),
        sa.UniqueConstraint("active_ecu", name=op.f("uq_campaign_members_active_ecu")),
    )
    op.create_index(
        op.f("ix_campaign_members_campaign_id"), "campaign_members", ["campaign_id"], unique=False
    )
    with op.batch_alter_table("ecus") as batch:
        batch.add_column(sa.Column("installed_release_counter", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("unreachable_since", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("unreachable_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("last_seen", sa.BigInteger(), nullable=True))
    # the per-second deadline sweep reads the few ECUs named unreachable
    op.create_index(op.f("ix_ecus_unreachable_since"), "ecus", ["unreachable_since"], unique=False)
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("depends_on", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("campaign_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("forced", sa.Boolean(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_assignments_depends_on_assignments"), "assignments", ["depends_on"], ["id"]
        )
        batch.create_foreign_key(
            op.f("fk_assignments_campaign_id_campaigns"), "campaigns", ["campaign_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.drop_constraint(op.f("fk_assignments_campaign_id_campaigns"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_assignments_depends_on_assignments"), type_="foreignkey")
        batch.drop_column("forced")
        batch.drop_column("campaign_id")
        batch.drop_column("depends_on")
    op.drop_index(op.f("ix_ecus_unreachable_since"), table_name="ecus")
    with op.batch_alter_table("ecus") as batch:
        batch.drop_column("last_seen")
        batch.drop_column("unreachable_reason")
        batch.drop_column("unreachable_since")
        batch.drop_column("installed_release_counter")
    op.drop_index(op.f("ix_campaign_members_campaign_id"), table_name="campaign_members")
    op.drop_table("campaign_members")
    op.drop_index(op.f("ix_campaigns_state"), table_name="campaigns")
    op.drop_table("campaigns")
    op.drop_table("group_vehicles")
    op.drop_table("groups")
