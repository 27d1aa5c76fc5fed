"""Production services (issue 19): named API tokens with scopes and an expiry, the audit
log of every change made through the API or the CLI, and the client certificates bound to
vehicles for mutual TLS.

Tokens kept in ``director.json`` before this revision (the admin token's hash, ``tokens``)
keep working: the service and the CLI copy them into ``api_tokens`` (director/tokens.py,
``import_legacy``), an old admin token as a token named ``admin`` with the admin scope.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        # only the SHA-256 of a token is stored
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        # space-separated: read, assign, campaign, keys, admin
        sa.Column("scopes", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_api_tokens_token_sha256")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        # the token's name, or cli:USER
        sa.Column("actor", sa.String(length=128), nullable=False),
        # "POST /api/v1/vehicles" or "cli vehicle add"
        sa.Column("action", sa.String(length=256), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("node", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_request_id"), "audit_log", ["request_id"])
    op.create_table(
        "vehicle_certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        # SHA-256 of the certificate's DER: what a TLS connection presents
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=False),
        sa.Column("vin", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        # "director" (issued here) or "oem" (the OEM's PKI, accepted)
        sa.Column("issuer", sa.String(length=16), nullable=False),
        sa.Column("not_after", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vehicle_id"],
            ["vehicles.id"],
            name=op.f("fk_vehicle_certificates_vehicle_id_vehicles"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vehicle_certificates")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_vehicle_certificates_fingerprint")),
    )
    op.create_index(op.f("ix_vehicle_certificates_vin"), "vehicle_certificates", ["vin"])


def downgrade() -> None:
    op.drop_index(op.f("ix_vehicle_certificates_vin"), table_name="vehicle_certificates")
    op.drop_table("vehicle_certificates")
    op.drop_index(op.f("ix_audit_log_request_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("api_tokens")
