"""The Director's inventory database (§5.3.2.2), in SQLAlchemy Core.

SQLite file by default, PostgreSQL through a database URL. The schema is created and
upgraded by Alembic (:func:`migrate`); every change the Director makes runs in one
transaction (``engine.begin()``). Times are stored as integer seconds since the epoch (UTC),
the same on both databases.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING)

#: a column widened to BIGINT by migration 0006 (the integer policy's 0..2**63-1). SQLite's
#: INTEGER already holds 64 bits; there the migration leaves the type, and so does this.
WIDE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

vehicles = sa.Table(
    "vehicles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("vin", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("last_manifest_at", sa.BigInteger),
    # the Primary's manifest-level attack indicator in the last accepted manifest (0004):
    # an attack row is stored only when the indicator differs from it
    sa.Column("last_attack", sa.Text),
)

ecus = sa.Table(
    "ecus",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("vehicle_id", sa.Integer, sa.ForeignKey("vehicles.id"), nullable=False),
    sa.Column("serial", sa.String(256), nullable=False),
    sa.Column("hardware_id", sa.String(256), nullable=False, index=True),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("is_primary", sa.Boolean, nullable=False),
    sa.Column("installed_path", sa.Text),
    sa.Column("installed_length", sa.BigInteger),
    sa.Column("installed_hashes", sa.Text),
    sa.Column("last_report_time", sa.BigInteger),
    sa.Column("last_attack", sa.Text),
    # the last accepted report counter, for ECUs that count rather than send nonces (0002)
    sa.Column("last_counter", sa.BigInteger),
    # the release counter the ECU's last report claims for its installed image (0005)
    sa.Column("installed_release_counter", sa.BigInteger),
    # unreachable ECUs (0005): since when the Primary names it unreachable without a break
    # (the Director's time), the Primary's reason, and the last time the ECU answered it
    sa.Column("unreachable_since", sa.BigInteger, index=True),
    sa.Column("unreachable_reason", sa.Text),
    sa.Column("last_seen", sa.BigInteger),
    # 0009 (issue 17): the ECU's X25519 encryption public key (TUF-style JSON) and key id
    sa.Column("encryption_key", sa.Text),
    sa.Column("encryption_key_id", sa.String(64)),
    sa.UniqueConstraint("vehicle_id", "serial", name="uq_ecus_vehicle_serial"),
)

nonces = sa.Table(
    "nonces",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("ecu_id", sa.Integer, sa.ForeignKey("ecus.id"), nullable=False),
    sa.Column("nonce", sa.String(512), nullable=False),
    sa.Column("seen_at", sa.BigInteger, nullable=False, index=True),
    sa.UniqueConstraint("ecu_id", "nonce", name="uq_nonces_ecu_nonce"),
)

manifests = sa.Table(
    "manifests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("vehicle_id", sa.Integer, sa.ForeignKey("vehicles.id"), nullable=False, index=True),
    sa.Column("received_at", sa.BigInteger, nullable=False, index=True),
    # 0006: 16 wide, was 8 ("compact-der"); SQLite does not enforce a VARCHAR's length
    sa.Column("encoding", sa.String(16).with_variant(sa.String(8), "sqlite"), nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),
)

attacks = sa.Table(
    "attacks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("vehicle_id", sa.Integer, sa.ForeignKey("vehicles.id"), nullable=False, index=True),
    sa.Column("ecu_id", sa.Integer, sa.ForeignKey("ecus.id"), index=True),
    sa.Column("manifest_id", sa.Integer, sa.ForeignKey("manifests.id"), nullable=False, index=True),
    sa.Column("attack", sa.Text, nullable=False),
    sa.Column("reported_at", sa.BigInteger, nullable=False),
)

bundles = sa.Table(
    "bundles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("vehicle_id", sa.Integer, sa.ForeignKey("vehicles.id"), nullable=False, index=True),
    # director.lifecycle.BUNDLE
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger),
    sa.Column("targets_version", WIDE),  # 0006: BIGINT
)

assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("vehicle_id", sa.Integer, sa.ForeignKey("vehicles.id"), nullable=False, index=True),
    sa.Column("ecu_id", sa.Integer, sa.ForeignKey("ecus.id"), nullable=False, index=True),
    sa.Column("bundle_id", sa.Integer, sa.ForeignKey("bundles.id"), index=True),
    sa.Column("target_path", sa.Text, nullable=False),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("hashes", sa.Text, nullable=False),
    sa.Column("hardware_id", sa.String(256), nullable=False),
    sa.Column("release_counter", WIDE),  # 0006: BIGINT
    # the Image repository's hardware ids and SHALL-match section, copied as they are (0003)
    sa.Column("image_custom", sa.Text),
    # the ECU's attack indicator when the bundle went out, while the ECU keeps reporting
    # that very indicator: it is not new, so it does not fail this assignment (0004)
    sa.Column("stale_attack", sa.Text),
    # director.lifecycle.ASSIGNMENT
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    # 0005: goes out only after this assignment is installed (director.dependencies)
    sa.Column("depends_on", sa.Integer, sa.ForeignKey("assignments.id")),
    # 0005: the campaign that made it, and whether a downgrade was forced
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id"), index=True),
    sa.Column("forced", sa.Boolean),
    # 0009 (issue 17): the image goes out encrypted to the ECU's encryption key
    sa.Column("encrypt", sa.Boolean),
)

#: 0009 (issue 17): the OEM's choice of encryption per image (scope "image", value a
#: target path) or per hardware id (scope "hardware"); director.encrypting reads them
encryption_rules = sa.Table(
    "encryption_rules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("encrypt", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("scope", "value", name="uq_encryption_rules_scope_value"),
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

group_vehicles = sa.Table(
    "group_vehicles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("group_id", sa.Integer, sa.ForeignKey("groups.id"), nullable=False),
    sa.Column("vehicle_id", sa.Integer, sa.ForeignKey("vehicles.id"), nullable=False),
    sa.UniqueConstraint("group_id", "vehicle_id", name="uq_group_vehicles_group_vehicle"),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("target_path", sa.Text, nullable=False),
    sa.Column("hardware_id", sa.String(256)),
    # what was selected (hardware id, VINs, group), as JSON
    sa.Column("selection", sa.Text, nullable=False),
    # the waves as asked ({"percent"} or {"count"} each) and their sizes, as JSON
    sa.Column("waves", sa.Text, nullable=False),
    sa.Column("soak_seconds", sa.BigInteger, nullable=False),
    sa.Column("failure_threshold", sa.Float, nullable=False),
    sa.Column("force", sa.Boolean, nullable=False),
    # director.lifecycle.CAMPAIGN
    sa.Column("state", sa.String(16), nullable=False, index=True),
    # the wave going out (1-based; 0 before the first), when it started and when its last
    # member ended (the soak time runs from then)
    sa.Column("current_wave", sa.Integer, nullable=False),
    sa.Column("wave_started_at", sa.BigInteger),
    sa.Column("wave_done_at", sa.BigInteger),
    # the wave whose failures the OEM accepted by resuming after a halt
    sa.Column("resumed_wave", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger),
    # 0012 (issue 20): batches go on from here after a restart. While ``creating``: the
    # highest vehicle id whose selected ECUs are members, and how many members (not
    # skipped) are recorded; once ended: when every member's ECU was released
    sa.Column("members_cursor", sa.Integer),
    sa.Column("members_recorded", sa.Integer, nullable=False, server_default="0"),
    sa.Column("released_at", sa.BigInteger),
)

campaign_members = sa.Table(
    "campaign_members",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id"), nullable=False, index=True),
    sa.Column("vehicle_id", sa.Integer, sa.ForeignKey("vehicles.id"), nullable=False),
    sa.Column("ecu_id", sa.Integer, sa.ForeignKey("ecus.id"), nullable=False, index=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("assignment_id", sa.Integer, sa.ForeignKey("assignments.id"), index=True),
    # director.lifecycle.MEMBER; once assigned, the assignment's state is the outcome
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    # the ECU's id while the campaign is active, NULL once it ended: unique, so an ECU is
    # in at most one active campaign (NULLs do not collide, on SQLite and PostgreSQL)
    sa.Column("active_ecu", sa.Integer, unique=True),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

vehicle_metadata = sa.Table(
    "vehicle_metadata",
    metadata,
    sa.Column("vin", sa.String(64), primary_key=True),
    sa.Column("vehicle_id", sa.Integer, sa.ForeignKey("vehicles.id"), nullable=False),
    # 0006: BIGINT
    sa.Column("targets_version", WIDE, nullable=False),
    sa.Column("snapshot_version", WIDE, nullable=False),
    sa.Column("timestamp_version", WIDE, nullable=False),
    sa.Column("snapshot_expires", sa.BigInteger, nullable=False),
    sa.Column("timestamp_expires", sa.BigInteger, nullable=False, index=True),
    sa.Column("targets_json", sa.LargeBinary, nullable=False),
    sa.Column("snapshot_json", sa.LargeBinary, nullable=False),
    sa.Column("timestamp_json", sa.LargeBinary, nullable=False),
    sa.Column("targets_der", sa.LargeBinary),
    sa.Column("snapshot_der", sa.LargeBinary),
    sa.Column("timestamp_der", sa.LargeBinary),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    # 0007: compact-der (NULL in rows signed before it: signed again when next served)
    sa.Column("targets_compact_der", sa.LargeBinary),
    sa.Column("snapshot_compact_der", sa.LargeBinary),
    sa.Column("timestamp_compact_der", sa.LargeBinary),
)

#: offline update bundles (0008, issue 18): a vehicle's bundle carried on a USB stick
#: (director/offline.py): when it was made, until when its metadata holds, what it carries
offline_bundles = sa.Table(
    "offline_bundles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("vehicle_id", sa.Integer, sa.ForeignKey("vehicles.id"), nullable=False, index=True),
    sa.Column("bundle_id", sa.Integer, sa.ForeignKey("bundles.id"), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("targets_version", WIDE, nullable=False),
    sa.Column("timestamp_version", WIDE, nullable=False),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
)

#: 0010 (issue 19): named API tokens (only their SHA-256), scopes "read assign campaign
#: keys admin", expiry and revocation (director/tokens.py)
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.String(128), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(128)),
    sa.Column("expires_at", sa.BigInteger),
    sa.Column("revoked_at", sa.BigInteger),
)

#: 0010: every change made through the API or the CLI (director/audit.py)
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.BigInteger, nullable=False, index=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(256), nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("status", sa.Integer),
    sa.Column("request_id", sa.String(64), index=True),
    sa.Column("node", sa.String(128)),
    sa.Column("detail", sa.Text),
)

#: 0010: client certificates bound to vehicles for mutual TLS (director/certs.py)
vehicle_certificates = sa.Table(
    "vehicle_certificates",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
    sa.Column("vehicle_id", sa.Integer, sa.ForeignKey("vehicles.id"), nullable=False),
    sa.Column("vin", sa.String(64), nullable=False, index=True),
    sa.Column("serial", sa.String(64), nullable=False),
    sa.Column("issuer", sa.String(16), nullable=False),
    sa.Column("not_after", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger),
    sa.Column("pem", sa.Text, nullable=False),
)

MIGRATIONS = Path(__file__).parent / "migrations"
#: the execution option of a connection that only runs single SELECTs: on SQLite it takes
#: no write lock (no ``BEGIN IMMEDIATE``); :func:`reader` sets it
READ_ONLY = "uptane_read_only"


def reader(engine: Engine) -> Engine:
    """``engine`` for single-statement reads (the poll path): each statement is its own
    read transaction, with no BEGIN and no lock (SQLite) and no BEGIN and ROLLBACK round
    trips (PostgreSQL, autocommit). Same pool and same event listeners as ``engine``."""
    if engine.dialect.name == "sqlite":  # pysqlite runs no BEGIN of its own here
        return engine.execution_options(**{READ_ONLY: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT", **{READ_ONLY: True})


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # take transaction control from pysqlite, so that reads are inside the
            # transaction and a writer holds the lock from its first statement
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            # every commit fsyncs the WAL before it returns: an accepted manifest (its
            # nonces) and a signed metadata version survive a power loss, not only a
            # killed process. NORMAL would skip that fsync (about 2-5 ms of a manifest's
            # time here, bench figure 7) but could roll the last commits back on power
            # loss: nonces then replayable, metadata versions issued twice.
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            # a connection made for single reads (READ_ONLY, the poll path) takes no lock:
            # each of its statements is its own read transaction
            if not conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def migrate(url: str, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision`` (the newest by default)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)
