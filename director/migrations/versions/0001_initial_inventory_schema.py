"""initial inventory schema

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vehicles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vin", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_manifest_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vehicles")),
        sa.UniqueConstraint("vin", name=op.f("uq_vehicles_vin")),
    )
    op.create_table(
        "bundles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("targets_version", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["vehicle_id"], ["vehicles.id"], name=op.f("fk_bundles_vehicle_id_vehicles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bundles")),
    )
    op.create_index(op.f("ix_bundles_vehicle_id"), "bundles", ["vehicle_id"], unique=False)
    op.create_table(
        "ecus",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=256), nullable=False),
        sa.Column("hardware_id", sa.String(length=256), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("installed_path", sa.Text(), nullable=True),
        sa.Column("installed_length", sa.BigInteger(), nullable=True),
        sa.Column("installed_hashes", sa.Text(), nullable=True),
        sa.Column("last_report_time", sa.BigInteger(), nullable=True),
        sa.Column("last_attack", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["vehicle_id"], ["vehicles.id"], name=op.f("fk_ecus_vehicle_id_vehicles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ecus")),
        sa.UniqueConstraint("vehicle_id", "serial", name="uq_ecus_vehicle_serial"),
    )
    op.create_index(op.f("ix_ecus_hardware_id"), "ecus", ["hardware_id"], unique=False)
    op.create_table(
        "manifests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("encoding", sa.String(length=8), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vehicle_id"], ["vehicles.id"], name=op.f("fk_manifests_vehicle_id_vehicles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manifests")),
    )
    op.create_index(op.f("ix_manifests_vehicle_id"), "manifests", ["vehicle_id"], unique=False)
    op.create_table(
        "vehicle_metadata",
        sa.Column("vin", sa.String(length=64), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=False),
        sa.Column("targets_version", sa.Integer(), nullable=False),
        sa.Column("snapshot_version", sa.Integer(), nullable=False),
        sa.Column("timestamp_version", sa.Integer(), nullable=False),
        sa.Column("snapshot_expires", sa.BigInteger(), nullable=False),
        sa.Column("timestamp_expires", sa.BigInteger(), nullable=False),
        sa.Column("targets_json", sa.LargeBinary(), nullable=False),
        sa.Column("snapshot_json", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp_json", sa.LargeBinary(), nullable=False),
        sa.Column("targets_der", sa.LargeBinary(), nullable=True),
        sa.Column("snapshot_der", sa.LargeBinary(), nullable=True),
        sa.Column("timestamp_der", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vehicle_id"], ["vehicles.id"], name=op.f("fk_vehicle_metadata_vehicle_id_vehicles")
        ),
        sa.PrimaryKeyConstraint("vin", name=op.f("pk_vehicle_metadata")),
    )
    op.create_index(
        op.f("ix_vehicle_metadata_timestamp_expires"),
        "vehicle_metadata",
        ["timestamp_expires"],
        unique=False,
    )
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=False),
        sa.Column("ecu_id", sa.Integer(), nullable=False),
        sa.Column("bundle_id", sa.Integer(), nullable=True),
        sa.Column("target_path", sa.Text(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("hashes", sa.Text(), nullable=False),
        sa.Column("hardware_id", sa.String(length=256), nullable=False),
        sa.Column("release_counter", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bundle_id"], ["bundles.id"], name=op.f("fk_assignments_bundle_id_bundles")
        ),
        sa.ForeignKeyConstraint(["ecu_id"], ["ecus.id"], name=op.f("fk_assignments_ecu_id_ecus")),
        sa.ForeignKeyConstraint(
            ["vehicle_id"], ["vehicles.id"], name=op.f("fk_assignments_vehicle_id_vehicles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignments")),
    )
    op.create_index(op.f("ix_assignments_vehicle_id"), "assignments", ["vehicle_id"], unique=False)
    op.create_table(
        "attacks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=False),
        sa.Column("ecu_id", sa.Integer(), nullable=True),
        sa.Column("manifest_id", sa.Integer(), nullable=False),
        sa.Column("attack", sa.Text(), nullable=False),
        sa.Column("reported_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["ecu_id"], ["ecus.id"], name=op.f("fk_attacks_ecu_id_ecus")),
        sa.ForeignKeyConstraint(
            ["manifest_id"], ["manifests.id"], name=op.f("fk_attacks_manifest_id_manifests")
        ),
        sa.ForeignKeyConstraint(
            ["vehicle_id"], ["vehicles.id"], name=op.f("fk_attacks_vehicle_id_vehicles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attacks")),
    )
    op.create_index(op.f("ix_attacks_vehicle_id"), "attacks", ["vehicle_id"], unique=False)
    op.create_table(
        "nonces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ecu_id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=512), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["ecu_id"], ["ecus.id"], name=op.f("fk_nonces_ecu_id_ecus")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nonces")),
        sa.UniqueConstraint("ecu_id", "nonce", name="uq_nonces_ecu_nonce"),
    )


def downgrade() -> None:
    op.drop_table("nonces")
    op.drop_index(op.f("ix_attacks_vehicle_id"), table_name="attacks")
    op.drop_table("attacks")
    op.drop_index(op.f("ix_assignments_vehicle_id"), table_name="assignments")
    op.drop_table("assignments")
    op.drop_index(op.f("ix_vehicle_metadata_timestamp_expires"), table_name="vehicle_metadata")
    op.drop_table("vehicle_metadata")
    op.drop_index(op.f("ix_manifests_vehicle_id"), table_name="manifests")
    op.drop_table("manifests")
    op.drop_index(op.f("ix_ecus_hardware_id"), table_name="ecus")
    op.drop_table("ecus")
    op.drop_index(op.f("ix_bundles_vehicle_id"), table_name="bundles")
    op.drop_table("bundles")
    op.drop_table("vehicles")
