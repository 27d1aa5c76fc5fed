"""Encrypted images (issue 17): each ECU's X25519 encryption public key (§5.4.1, separate
from its signing key), whether an assignment's image goes out encrypted, and the OEM's
rules choosing encryption per image or per hardware id

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ecus") as batch:
        # TUF-style JSON of the key (uptane.encryption.EncryptionPublicKey) and its key id
        batch.add_column(sa.Column("encryption_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("encryption_key_id", sa.String(length=64), nullable=True))
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("encrypt", sa.Boolean(), nullable=True))
    op.create_table(
        "encryption_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        # "image" (value: a target path) or "hardware" (value: a hardware id)
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("encrypt", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_encryption_rules")),
        sa.UniqueConstraint("scope", "value", name="uq_encryption_rules_scope_value"),
    )


def downgrade() -> None:
    op.drop_table("encryption_rules")
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("encrypt")
    with op.batch_alter_table("ecus") as batch:
        batch.drop_column("encryption_key_id")
        batch.drop_column("encryption_key")
