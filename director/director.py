"""The Director (§5.3.2): inventory, assignments and bundles, per-vehicle metadata.

:class:`Director` is the service layer that the HTTP app and the CLI share. Every change is
one database transaction (manifests arriving together share one, and one durable commit,
each with the outcome it would have had alone: :mod:`director.groupcommit`); per-vehicle
metadata is built and signed with :class:`uptane.repository.RepositoryBuilder` inside that
transaction, so versions only grow and nothing half-written is visible. Signed bytes are
cached in memory: an unchanged poll costs at most one indexed lookup.

Directory layout of a Director ``DIR``: ``director.json`` (configuration, the SHA-256 of the
admin token), ``online-keys/`` (targets, snapshot, timestamp), ``root/N.root.EXT`` (the
offline-signed Director root), ``image-root.json`` (the pinned Image-repository root) and,
by default, ``inventory.db``. The Director root key lives in ``DIR.offline-keys``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director import inventory as inv
from director.groupcommit import GroupCommit
from director.imageview import ImageRepoView, source_for
from director.keysource import FileKeySource, KeySource, generate
from director.repostate import available_encodings
from storage import atomic_write, read_json, write_json
from uptane.errors import BadEcuId, ReplayAttack, TargetNotFound, UptaneError
from uptane.identity import ImageIdentity, same_image
from uptane.keys import ED25519, Key
from uptane.limits import Limits
from uptane.manifest import (
    EcuVersionReport,
    SignedManifest,
    VehicleVersionManifest,
    check_manifest_against_inventory,
    check_report_freshness,
    decode_vehicle_manifest,
)
from uptane.metadata import DER, JSON, TargetFile, Targets, decode
from uptane.paths import check_target_path
from uptane.repository import RepositoryBuilder

VIN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ECU_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
HWID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

ADMIN, VIEWER = "admin", "viewer"
ROLES = (ADMIN, VIEWER)

DEFAULT_EXPIRY_DAYS = {"targets": 30.0, "snapshot": 7.0, "timestamp": 1.0}

# Statements of manifest processing, as SQL text run on the DBAPI cursor of the group
# commit's connection (the same on SQLite and PostgreSQL; ``:name`` parameters, rewritten
# for psycopg2 by :func:`_sql`): SQLAlchemy's execution cost more than the statements.
#: the vehicle, the Primary's last manifest-level indicator, its bundle in flight, and its
#: ECUs in order (one row per ECU; ECU columns NULL for a vehicle without ECUs)
_VEHICLE_ECUS = (
    "SELECT v.id, v.last_attack, (SELECT b.id FROM bundles b WHERE b.vehicle_id = v.id"
    " AND b.state = :in_flight LIMIT 1), e.id, e.serial, e.public_key, e.is_primary,"
    " e.last_counter, e.last_attack, {seen} FROM vehicles v LEFT OUTER JOIN ecus e"
    " ON e.vehicle_id = v.id WHERE v.vin = :vin ORDER BY e.id"
)
_INSERT_MANIFEST = (
    "INSERT INTO manifests (vehicle_id, received_at, encoding, raw)"
    " VALUES (:vid, :t, :enc, :raw) RETURNING id"
)
_MANIFEST_SEEN = "UPDATE vehicles SET last_manifest_at = :t, last_attack = :attack WHERE id = :vid"
#: a nonce report leaves the ECU's counter as it is (COALESCE)
_ECU_REPORTED = (
    "UPDATE ecus SET installed_path = :path, installed_length = :length,"
    " installed_hashes = :hashes, last_report_time = :time, last_attack = :attack,"
    " last_counter = COALESCE(:counter, last_counter) WHERE id = :id"
)


#: json.dumps(hashes, sort_keys=True) as the ECU rows store installed hashes, the encoder
#: built once
_HASHES_JSON = json.JSONEncoder(sort_keys=True).encode


@functools.cache
def _sql(text: str, dialect: str) -> str:
    """``text`` in the paramstyle of ``dialect``'s driver (sqlite3 takes ``:name``)."""
    if dialect == "sqlite":
        return text
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", text)


@functools.cache
def _vehicle_ecus_sql(n: int, dialect: str) -> str:
    """The vehicle, its ECUs, its bundle in flight and, per ECU, whether the nonce its
    report carries (``:s0``/``:n0`` … serial and nonce of ``n`` reports) was stored
    before: one probe of the unique (ecu_id, nonce) index per ECU, in the same query
    (``n`` is at most ``Limits.max_ecus``, 256)."""
    if n == 0:
        return _sql(_VEHICLE_ECUS.format(seen="NULL"), dialect)
    when = " ".join(f"WHEN :s{i} THEN :n{i}" for i in range(n))
    seen = f"(SELECT 1 FROM nonces n WHERE n.ecu_id = e.id AND n.nonce = CASE e.serial {when} END)"
    return _sql(_VEHICLE_ECUS.format(seen=seen), dialect)


#: a manifest's nonces, one multi-row INSERT (one statement, not one per report)
@functools.cache
def _insert_nonces_sql(n: int, dialect: str) -> str:
    rows = ", ".join(f"(:e{i}, :n{i}, :t)" for i in range(n))
    return _sql(f"INSERT INTO nonces (ecu_id, nonce, seen_at) VALUES {rows}", dialect)


class _Slots:
    """At most ``n`` holders at once, each holding one of ``n`` plain locks: a caller takes
    a free one, or waits for one in turn. (A :class:`threading.Semaphore` is Python code
    around a condition variable, and every manifest passes through here.)"""

    def __init__(self, n: int) -> None:
        self._locks = [threading.Lock() for _ in range(n)]
        self._turn = itertools.count()

    def acquire(self) -> threading.Lock:
        """Hold a slot until the returned lock is released."""
        for lock in self._locks:
            if lock.acquire(blocking=False):
                return lock
        lock = self._locks[next(self._turn) % len(self._locks)]
        lock.acquire()
        return lock


class _Ecu(NamedTuple):
    """One ECU row as manifest processing reads it."""

    id: int
    serial: str
    public_key: str
    is_primary: bool
    last_counter: int | None
    last_attack: str | None


@dataclass
class _Prechecked:
    """What a manifest's signatures and identities were checked against before it was
    queued: the Primary's serial and every ECU's stored key text, as cached."""

    primary: str
    keys: dict[str, str]
    body: VehicleVersionManifest
    reports: dict[str, EcuVersionReport]


class NotFound(Exception):
    """A vehicle, ECU or assignment that does not exist (HTTP 404)."""


class Conflict(Exception):
    """A request that contradicts the current state (HTTP 409)."""


class Invalid(Exception):
    """A well-formed request with values the Director refuses (HTTP 422)."""


class Unavailable(Exception):
    """A service the Director depends on cannot be reached (HTTP 503)."""


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _ts(t: datetime) -> int:
    return int(t.timestamp())


def _dt(t: int | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def default_offline_dir(director_dir: Path) -> Path:
    return director_dir.parent / f"{director_dir.name}.offline-keys"


@dataclass
class EcuSpec:
    """An ECU to register: its serial (ECU id), hardware id, public key, primary flag."""

    serial: str
    hardware_id: str
    public_key: Key
    primary: bool = False


@dataclass
class Config:
    """``director.json``."""

    db_url: str
    image_repo: str
    admin_token_sha256: str
    expiry_days: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EXPIRY_DAYS))
    max_body_bytes: int = 1024 * 1024
    report_skew_seconds: int = 300
    cache_seconds: float = 2.0
    cache_vehicles: int = 10_000
    #: further API tokens: SHA-256 -> role ("admin" or "viewer", read-only)
    tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Config:
        d = read_json(path)
        if d is None:
            raise FileNotFoundError(f"no Director configuration at {path}")
        return cls(**d)

    def save(self, path: Path) -> None:
        write_json(path, self.__dict__, mode=0o600)

    @property
    def expiry(self) -> dict[str, timedelta]:
        return {k: timedelta(days=v) for k, v in self.expiry_days.items()}


@dataclass
class _Cached:
    fetched: float
    files: dict[str, bytes]
    versions: dict[str, int]
    timestamp_expires: int


class Director:
    """One Director: configuration, keys, database, Image-repository view and caches."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], datetime] = _utcnow,
        keys: KeySource | None = None,
        image_view: ImageRepoView | None = None,
        db_url: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.config = Config.load(self.dir / "director.json")
        if db_url is not None:
            self.config.db_url = db_url
        self.clock = clock
        self.limits = limits or Limits.primary()
        self.keys = keys or FileKeySource(self.dir / "online-keys")
        self.encodings = available_encodings()
        self.engine: Engine = inv.make_engine(self.config.db_url)
        self.root_files = self._load_root()
        self._image_view = image_view
        #: signed bytes per VIN, least recently used first, at most ``cache_vehicles``
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_lock = threading.Lock()
        #: parsed ECU keys by their stored JSON text (the text is the key: no staleness)
        self._keys: dict[str, Key] = {}
        #: per VIN, the Primary's serial and every ECU's stored key text, as the writer last
        #: read them: manifests are checked against it before they queue, and the writer
        #: compares it with the rows it reads (a stale entry only costs a second check)
        self._ecu_keys: dict[str, tuple[str, dict[str, str]]] = {}
        #: manifests share transactions and durable commits (director/groupcommit.py)
        self.writer = GroupCommit(self.engine)
        #: manifests decoded and signature-checked at once: one per core. More only queue
        #: for Python's GIL, and the writer thread then waits behind all of them each time
        #: a statement hands the GIL back (bench/README.md, figure 7).
        self._cpu = _Slots(max(1, os.cpu_count() or 1))

    # --- setup ----------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        image_repo: str,
        image_root: bytes,
        *,
        offline_dir: Path | None = None,
        db_url: str | None = None,
        now: datetime | None = None,
        scheme: str = ED25519,
        expiry_days: dict[str, float] | None = None,
    ) -> str:
        """Create keys, the Director root (signed offline now), the configuration and the
        database schema. Returns the admin token, which is stored only as a hash."""
        directory = Path(directory)
        if (directory / "director.json").exists():
            raise FileExistsError(f"{directory} already holds a Director")
        offline = FileKeySource(offline_dir or default_offline_dir(directory))
        if offline.directory.resolve().is_relative_to(directory.resolve()):
            raise ValueError("the offline key directory must be outside the Director directory")
        online = FileKeySource(directory / "online-keys")
        signers: dict[str, list[Any]] = {}
        for role, src in (
            ("root", offline),
            ("targets", online),
            ("snapshot", online),
            ("timestamp", online),
        ):
            if not src.signers(role):
                src.add(role, generate(scheme))
            signers[role] = src.signers(role)
        b = RepositoryBuilder(
            "director", signers, now or _utcnow(), encodings=available_encodings()
        )
        for enc, data in b.root_history[0].items():
            atomic_write(directory / "root" / f"1.root.{enc}", data, mode=0o644)
        # pin the Image repository's root after checking it is one (threshold-signed)
        from uptane.trust import RepositoryTrust

        RepositoryTrust("image", image_root, Limits.primary())
        atomic_write(directory / "image-root.json", image_root, mode=0o644)
        token = secrets.token_urlsafe(32)
        url = db_url or f"sqlite:///{(directory / 'inventory.db').resolve()}"
        cfg = Config(url, image_repo, hash_token(token))
        if expiry_days:
            cfg.expiry_days.update(expiry_days)
        inv.migrate(url)
        cfg.save(directory / "director.json")
        return token

    def _load_root(self) -> dict[int, dict[str, bytes]]:
        out: dict[int, dict[str, bytes]] = {}
        for p in (self.dir / "root").glob("*.root.*"):
            v, _, enc = p.name.split(".", 2)
            if v.isdigit() and enc in self.encodings:
                out.setdefault(int(v), {})[enc] = p.read_bytes()
        if not out:
            raise FileNotFoundError(f"no Director root in {self.dir / 'root'}")
        return out

    @property
    def image_view(self) -> ImageRepoView:
        if self._image_view is None:
            self._image_view = ImageRepoView(
                source_for(self.config.image_repo),
                (self.dir / "image-root.json").read_bytes(),
                self.clock,
                limits=self.limits,
            )
        return self._image_view

    def check_admin_token(self, token: str) -> bool:
        return self.token_role(token) == ADMIN

    def token_role(self, token: str) -> str | None:
        """The role of an API token (``admin`` or ``viewer``), or None if unknown."""
        import hmac

        digest = hash_token(token)
        if hmac.compare_digest(digest, self.config.admin_token_sha256):
            return ADMIN
        for known, role in self.config.tokens.items():
            if hmac.compare_digest(digest, known):
                return role
        return None

    def add_token(self, role: str) -> str:
        """Create an API token for ``role``; returns it (only its hash is stored)."""
        if role not in ROLES:
            raise Invalid(f"role must be one of {ROLES}")
        token = secrets.token_urlsafe(32)
        self.config.tokens[hash_token(token)] = role
        self.config.save(self.dir / "director.json")
        return token

    def dispose(self) -> None:
        """Finish the manifests already queued, stop the writer, close the connections."""
        self.writer.close()
        self.engine.dispose()

    # --- vehicles and ECUs ------------------------------------------------------------------

    def register_vehicle(self, vin: str, ecus: Iterable[EcuSpec]) -> dict[str, Any]:
        """Add a vehicle with its ECUs (exactly one primary) and sign its first metadata."""
        ecus = list(ecus)
        if not VIN_RE.match(vin):
            raise Invalid("VIN must be 1-64 letters, digits, '-' or '_'")
        if not ecus:
            raise Invalid("a vehicle needs at least one ECU")
        if sum(e.primary for e in ecus) != 1:
            raise Invalid("a vehicle needs exactly one primary ECU")
        self.limits.check_count("ECUs", len(ecus), self.limits.max_ecus)
        serials = [e.serial for e in ecus]
        if len(set(serials)) != len(serials):
            raise Invalid("ECU serials must be unique within a vehicle")
        for e in ecus:
            self._check_ecu(e)
        now = self.clock()
        with self.engine.begin() as conn:
            if conn.execute(sa.select(inv.vehicles.c.id).where(inv.vehicles.c.vin == vin)).first():
                raise Conflict(f"vehicle {vin} is already registered")
            vid = conn.execute(
                inv.vehicles.insert().values(vin=vin, created_at=_ts(now))
            ).inserted_primary_key[0]
            for e in ecus:
                self._insert_ecu(conn, vid, e)
            self._publish(conn, vid, vin, now, new_targets=[])
        return self.vehicle_status(vin)

    def _check_ecu(self, e: EcuSpec) -> None:
        if not ECU_RE.match(e.serial):
            raise Invalid(f"bad ECU serial {e.serial[:64]!r}")
        if not HWID_RE.match(e.hardware_id):
            raise Invalid(f"bad hardware id {e.hardware_id[:64]!r}")
        try:
            e.public_key.load()
        except UptaneError as err:
            raise Invalid(f"ECU {e.serial}: {err}") from None

    def _insert_ecu(self, conn: Connection, vid: int, e: EcuSpec) -> None:
        conn.execute(
            inv.ecus.insert().values(
                vehicle_id=vid,
                serial=e.serial,
                hardware_id=e.hardware_id,
                public_key=json.dumps(e.public_key.to_dict(), sort_keys=True),
                key_id=e.public_key.keyid,
                is_primary=e.primary,
            )
        )

    def add_ecu(self, vin: str, ecu: EcuSpec) -> dict[str, Any]:
        """Add a secondary ECU to a registered vehicle."""
        self._check_ecu(ecu)
        if ecu.primary:
            raise Invalid("a vehicle has exactly one primary, registered with the vehicle")
        with self.engine.begin() as conn:
            vid = self._vehicle_id(conn, vin)
            n = conn.execute(
                sa.select(sa.func.count()).where(inv.ecus.c.vehicle_id == vid)
            ).scalar_one()
            self.limits.check_count("ECUs", n + 1, self.limits.max_ecus)
            if conn.execute(
                sa.select(inv.ecus.c.id).where(
                    inv.ecus.c.vehicle_id == vid, inv.ecus.c.serial == ecu.serial
                )
            ).first():
                raise Conflict(f"ECU {ecu.serial} is already registered")
            self._insert_ecu(conn, vid, ecu)
        self._ecu_keys.pop(vin, None)
        return self.vehicle_status(vin)

    def _vehicle_id(self, conn: Connection, vin: str) -> int:
        row = conn.execute(sa.select(inv.vehicles.c.id).where(inv.vehicles.c.vin == vin)).first()
        if row is None:
            raise NotFound(f"unknown vehicle {vin[:64]!r}")
        return int(row.id)

    def list_vehicles(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(inv.vehicles).order_by(inv.vehicles.c.vin)).all()
            counts = dict(
                conn.execute(
                    sa.select(inv.ecus.c.vehicle_id, sa.func.count()).group_by(
                        inv.ecus.c.vehicle_id
                    )
                ).all()
            )
        return [
            {
                "vin": r.vin,
                "ecus": counts.get(r.id, 0),
                "created_at": _dt(r.created_at),
                "last_manifest_at": _dt(r.last_manifest_at),
            }
            for r in rows
        ]

    def ecus_of(self, conn: Connection, vid: int) -> list[Any]:
        return list(
            conn.execute(
                sa.select(inv.ecus).where(inv.ecus.c.vehicle_id == vid).order_by(inv.ecus.c.id)
            ).all()
        )

    def vehicle_status(self, vin: str) -> dict[str, Any]:
        """Everything the OEM sees about one vehicle."""
        with self.engine.connect() as conn:
            vid = self._vehicle_id(conn, vin)
            v = conn.execute(sa.select(inv.vehicles).where(inv.vehicles.c.id == vid)).one()
            ecus = self.ecus_of(conn, vid)
            meta = conn.execute(
                sa.select(
                    inv.vehicle_metadata.c.targets_version,
                    inv.vehicle_metadata.c.snapshot_version,
                    inv.vehicle_metadata.c.timestamp_version,
                    inv.vehicle_metadata.c.timestamp_expires,
                ).where(inv.vehicle_metadata.c.vin == vin)
            ).first()
            bundles = conn.execute(
                sa.select(inv.bundles)
                .where(inv.bundles.c.vehicle_id == vid)
                .order_by(inv.bundles.c.id)
            ).all()
            manifests = conn.execute(
                sa.select(sa.func.count()).where(inv.manifests.c.vehicle_id == vid)
            ).scalar_one()
        return {
            "vin": vin,
            "created_at": _dt(v.created_at),
            "last_manifest_at": _dt(v.last_manifest_at),
            "manifests_accepted": manifests,
            "ecus": [self._ecu_dict(e) for e in ecus],
            "metadata": None
            if meta is None
            else {
                "targets": meta.targets_version,
                "snapshot": meta.snapshot_version,
                "timestamp": meta.timestamp_version,
                "timestamp_expires": _dt(meta.timestamp_expires),
            },
            "bundles": [
                {
                    "id": b.id,
                    "state": b.state,
                    "created_at": _dt(b.created_at),
                    "finished_at": _dt(b.finished_at),
                    "targets_version": b.targets_version,
                }
                for b in bundles
            ],
            "assignments": self.list_assignments(vin=vin),
            "attacks": self.list_attacks(vin=vin),
        }

    @staticmethod
    def _ecu_dict(e: Any) -> dict[str, Any]:
        return {
            "serial": e.serial,
            "hardware_id": e.hardware_id,
            "primary": bool(e.is_primary),
            "key_id": e.key_id,
            "public_key": json.loads(e.public_key),
            "installed": None
            if e.installed_path is None
            else {
                "path": e.installed_path,
                "length": e.installed_length,
                "hashes": json.loads(e.installed_hashes or "{}"),
            },
            "last_report_time": _dt(e.last_report_time),
            "last_attack": e.last_attack,
        }

    # --- assignments and bundles ------------------------------------------------------------

    def assign(self, vin: str, items: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """Assign images to ECUs of one vehicle: ``items`` are (ECU serial, target path).
        Each image must be in the Image repository and fit the ECU's hardware id. The
        assignments go out together with every other pending one of the vehicle, as one
        bundle, once no earlier bundle is in flight."""
        items = list(items)
        if not items:
            raise Invalid("no assignments given")
        serials = [s for s, _ in items]
        if len(set(serials)) != len(serials):
            raise Invalid("one assignment per ECU in a request")
        for _, path in items:
            check_target_path(path)  # MalformedInput: 400
        with self.engine.connect() as conn:
            vid = self._vehicle_id(conn, vin)
            ecus = {e.serial: e for e in self.ecus_of(conn, vid)}
        entries: list[tuple[Any, TargetFile]] = []
        for serial, path in items:
            ecu = ecus.get(serial)
            if ecu is None:
                raise NotFound(f"vehicle {vin} has no ECU {serial[:64]!r}")
            entries.append((ecu, self._image_entry(path, ecu.hardware_id)))
        now = self.clock()
        with self.engine.begin() as conn:
            ids = self._insert_assignments(conn, vid, entries, now)
            self._issue_bundle(conn, vid, vin, now)
        return [a for a in self.list_assignments(vin=vin) if a["id"] in ids]

    def _image_entry(self, path: str, hardware_id: str) -> TargetFile:
        try:
            return self.image_view.lookup(path, hardware_id)
        except TargetNotFound as e:
            raise Invalid(f"not in the Image repository: {e}") from None
        except UptaneError as e:
            raise Invalid(str(e)) from None
        except (httpx.HTTPError, OSError) as e:
            raise Unavailable(f"the Image repository cannot be read: {e}") from None

    def _insert_assignments(
        self, conn: Connection, vid: int, entries: list[tuple[Any, TargetFile]], now: datetime
    ) -> list[int]:
        ids = []
        for ecu, tf in entries:
            busy = conn.execute(
                sa.select(inv.assignments.c.id).where(
                    inv.assignments.c.ecu_id == ecu.id,
                    inv.assignments.c.state == inv.PENDING,
                )
            ).first()
            if busy is not None:
                raise Conflict(
                    f"ECU {ecu.serial} already has pending assignment {busy.id}; cancel it first"
                )
            ids.append(
                conn.execute(
                    inv.assignments.insert().values(
                        vehicle_id=vid,
                        ecu_id=ecu.id,
                        target_path=tf.path,
                        length=tf.length,
                        hashes=json.dumps(tf.hashes, sort_keys=True),
                        hardware_id=ecu.hardware_id,
                        release_counter=tf.release_counter,
                        image_custom=json.dumps(
                            {"hardwareIds": tf.hardware_ids, "shallMatch": tf.shall_match},
                            sort_keys=True,
                        ),
                        state=inv.PENDING,
                        created_at=_ts(now),
                        updated_at=_ts(now),
                    )
                ).inserted_primary_key[0]
            )
        return ids

    def campaign(self, hardware_id: str, path: str) -> dict[str, Any]:
        """Assign ``path`` to every ECU with ``hardware_id`` across the fleet. ECUs that
        already have a pending assignment are skipped and listed."""
        check_target_path(path)
        tf = self._image_entry(path, hardware_id)
        now = self.clock()
        created: list[int] = []
        skipped: list[dict[str, str]] = []
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(inv.ecus, inv.vehicles.c.vin)
                .join(inv.vehicles, inv.vehicles.c.id == inv.ecus.c.vehicle_id)
                .where(inv.ecus.c.hardware_id == hardware_id)
                .order_by(inv.ecus.c.id)
            ).all()
            touched: dict[int, str] = {}
            for ecu in rows:
                try:
                    created += self._insert_assignments(conn, ecu.vehicle_id, [(ecu, tf)], now)
                    touched[ecu.vehicle_id] = ecu.vin
                except Conflict as e:
                    skipped.append({"vin": ecu.vin, "ecu": ecu.serial, "reason": str(e)})
            for vid, vin in touched.items():
                self._issue_bundle(conn, vid, vin, now)
        return {"hardware_id": hardware_id, "target": path, "created": created, "skipped": skipped}

    def cancel(self, assignment_id: int) -> dict[str, Any]:
        """Cancel a pending assignment; one already sent to the vehicle cannot be."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(inv.assignments).where(inv.assignments.c.id == assignment_id)
            ).first()
            if row is None:
                raise NotFound(f"no assignment {assignment_id}")
            if row.state != inv.PENDING:
                raise Conflict(f"assignment {assignment_id} is {row.state}, not pending")
            conn.execute(
                inv.assignments.update()
                .where(inv.assignments.c.id == assignment_id)
                .values(state=inv.CANCELLED, updated_at=_ts(now), reason="cancelled by the OEM")
            )
        return self._assignment(assignment_id)

    def _assignment(self, aid: int) -> dict[str, Any]:
        return next(a for a in self.list_assignments() if a["id"] == aid)

    def list_assignments(
        self, *, vin: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        q = (
            sa.select(inv.assignments, inv.vehicles.c.vin, inv.ecus.c.serial)
            .join(inv.vehicles, inv.vehicles.c.id == inv.assignments.c.vehicle_id)
            .join(inv.ecus, inv.ecus.c.id == inv.assignments.c.ecu_id)
            .order_by(inv.assignments.c.id)
        )
        if vin is not None:
            q = q.where(inv.vehicles.c.vin == vin)
        if state is not None:
            q = q.where(inv.assignments.c.state == state)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [
            {
                "id": r.id,
                "vin": r.vin,
                "ecu": r.serial,
                "target": r.target_path,
                "length": r.length,
                "hashes": json.loads(r.hashes),
                "hardware_id": r.hardware_id,
                "release_counter": r.release_counter,
                "state": r.state,
                "bundle": r.bundle_id,
                "reason": r.reason,
                "created_at": _dt(r.created_at),
                "updated_at": _dt(r.updated_at),
            }
            for r in rows
        ]

    def list_attacks(self, *, vin: str | None = None) -> list[dict[str, Any]]:
        q = (
            sa.select(inv.attacks, inv.vehicles.c.vin, inv.ecus.c.serial)
            .join(inv.vehicles, inv.vehicles.c.id == inv.attacks.c.vehicle_id)
            .outerjoin(inv.ecus, inv.ecus.c.id == inv.attacks.c.ecu_id)
            .order_by(inv.attacks.c.id)
        )
        if vin is not None:
            q = q.where(inv.vehicles.c.vin == vin)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [
            {
                "id": r.id,
                "vin": r.vin,
                "ecu": r.serial,
                "attack": r.attack,
                "manifest": r.manifest_id,
                "reported_at": _dt(r.reported_at),
            }
            for r in rows
        ]

    def _issue_bundle(self, conn: Connection, vid: int, vin: str, now: datetime) -> int | None:
        """If nothing is in flight, send every pending assignment as one bundle (§4.3
        partial-bundle installation: no new bundle until the last one is confirmed)."""
        busy = conn.execute(
            sa.select(inv.bundles.c.id).where(
                inv.bundles.c.vehicle_id == vid, inv.bundles.c.state == inv.IN_FLIGHT
            )
        ).first()
        if busy is not None:
            return None
        pending = conn.execute(
            sa.select(inv.assignments.c.id).where(
                inv.assignments.c.vehicle_id == vid, inv.assignments.c.state == inv.PENDING
            )
        ).all()
        if not pending:
            return None
        bid = conn.execute(
            inv.bundles.insert().values(vehicle_id=vid, state=inv.IN_FLIGHT, created_at=_ts(now))
        ).inserted_primary_key[0]
        conn.execute(
            inv.assignments.update()
            .where(inv.assignments.c.id.in_([p.id for p in pending]))
            .values(
                bundle_id=bid,
                state=inv.IN_FLIGHT,
                updated_at=_ts(now),
                # the indicator the ECU carries as the bundle goes out is not news to it
                stale_attack=sa.select(inv.ecus.c.last_attack)
                .where(inv.ecus.c.id == inv.assignments.c.ecu_id)
                .scalar_subquery(),
            )
        )
        version = self._publish(conn, vid, vin, now, new_targets=self._bundle_targets(conn, bid))
        conn.execute(
            inv.bundles.update().where(inv.bundles.c.id == bid).values(targets_version=version)
        )
        return int(bid)

    def _bundle_targets(self, conn: Connection, bid: int) -> list[TargetFile]:
        rows = conn.execute(
            sa.select(inv.assignments, inv.ecus.c.serial)
            .join(inv.ecus, inv.ecus.c.id == inv.assignments.c.ecu_id)
            .where(inv.assignments.c.bundle_id == bid)
            .order_by(inv.assignments.c.id)
        ).all()
        out: dict[str, TargetFile] = {}
        for r in rows:
            tf = out.get(r.target_path)
            if tf is None:
                # copied from the Image repository's entry: length, hashes, release counter,
                # hardware ids and the SHALL-match section (§5.4.4.2 step 10.2)
                custom = json.loads(r.image_custom or "{}")
                tf = TargetFile(
                    r.target_path,
                    r.length,
                    json.loads(r.hashes),
                    hardware_ids=list(custom.get("hardwareIds") or []),
                    release_counter=r.release_counter,
                    shall_match=custom.get("shallMatch"),
                )
                out[r.target_path] = tf
            tf.ecu_ids[r.serial] = r.hardware_id
            if r.hardware_id not in tf.hardware_ids:
                tf.hardware_ids.append(r.hardware_id)
        return list(out.values())

    # --- manifests (§5.3.2.1) ----------------------------------------------------------------

    def process_manifest(self, vin: str, data: bytes, encoding: str = JSON) -> dict[str, Any]:
        """Check a vehicle version manifest against the inventory and record it.

        In order: the bytes decode (bounded); the vehicle is known; the Primary's signature
        verifies with its registered key and the manifest names this vehicle and Primary;
        every report is from a registered ECU of this vehicle, once, and every registered
        ECU has a report; each report verifies with its ECU's key; no nonce is reused and
        no counter goes back; each report's time is near now. Only then, in the same
        transaction: the manifest, nonces/counters, installed images and reported attacks
        are stored, and the bundle in flight advances. Any failure raises and changes
        nothing.

        Group commit (:mod:`director.groupcommit`): the decode, and the signature checks
        against the keys the Director last read for this vehicle, run in the caller's
        thread, at most one per core at a time; the rest is one checked unit of the
        writer's next batch.
        The unit reads the vehicle's ECUs and keys inside the transaction and repeats the
        signature and identity checks unless those keys are exactly the ones checked
        against. The answer comes only once the batch's commit is durable."""
        slot = self._cpu.acquire()
        try:
            manifest = decode_vehicle_manifest(data, self.limits, encoding)
            now = self.clock()
            pre = self._precheck(vin, manifest)
        finally:
            slot.release()
        try:
            result = self.writer.run_checked(
                lambda conn: self._manifest_unit(conn, vin, manifest, pre, data, encoding, now)
            )
        except sa.exc.IntegrityError:
            # a concurrent manifest (another process) stored the same nonce first
            raise ReplayAttack("a nonce in this manifest was just used") from None
        if result["bundle"] is not None:
            self.invalidate(vin)  # again, now that the new metadata is committed
        return result

    def _check_signed(
        self,
        vin: str,
        manifest: SignedManifest[VehicleVersionManifest],
        primary: str,
        keys: dict[str, str],
    ) -> tuple[VehicleVersionManifest, dict[str, EcuVersionReport]]:
        """The identity and signature checks of :meth:`process_manifest` against ``keys``
        (serial -> stored key text) and the Primary ``primary``."""
        return check_manifest_against_inventory(
            manifest,
            vehicle_id=vin,
            primary_id=primary,
            ecu_keys={serial: self._ecu_key(text) for serial, text in keys.items()},
        )

    def _precheck(
        self, vin: str, manifest: SignedManifest[VehicleVersionManifest]
    ) -> _Prechecked | None:
        """The checks of :meth:`_check_signed` against the cached keys, outside the writer;
        None when nothing is cached or a check fails (the writer then checks against the
        database and raises the error)."""
        cached = self._ecu_keys.get(vin)
        if cached is None:
            return None
        primary, keys = cached
        try:
            body, reports = self._check_signed(vin, manifest, primary, keys)
        except UptaneError:
            return None
        return _Prechecked(primary, keys, body, reports)

    def _manifest_unit(
        self,
        conn: Connection,
        vin: str,
        manifest: SignedManifest[VehicleVersionManifest],
        pre: _Prechecked | None,
        raw: bytes,
        encoding: str,
        now: datetime,
    ) -> Callable[[Connection], dict[str, Any]]:
        """The part of :meth:`process_manifest` inside the writer's transaction: every
        check, reading only, then the write that records the manifest (a checked unit of
        :meth:`director.groupcommit.GroupCommit.run_checked`)."""
        dialect = conn.dialect.name
        # the nonce each report carries, by ECU serial (a serial reported twice is refused
        # by the identity checks before these are used)
        nonces = {
            r.signed.ecu_id: r.signed.nonce.hex()
            for r in manifest.signed.reports
            if r.signed.nonce is not None
        }
        params: dict[str, Any] = {"vin": vin, "in_flight": inv.IN_FLIGHT}
        for i, (serial, nonce) in enumerate(nonces.items()):
            params[f"s{i}"] = serial
            params[f"n{i}"] = nonce
        cur = conn.connection.cursor()
        try:
            cur.execute(_vehicle_ecus_sql(len(nonces), dialect), params)
            rows = cur.fetchall()
            if not rows:
                raise NotFound(f"unknown vehicle {vin[:64]!r}")
            vid, vehicle_attack, in_flight = int(rows[0][0]), rows[0][1], rows[0][2]
            ecus = {r[4]: _Ecu(*r[3:9]) for r in rows if r[3] is not None}
            # (ECU id, nonce) pairs stored before, as the query found them
            seen = {(int(r[3]), nonces[r[4]]) for r in rows if r[9] is not None}
            primary = next((e.serial for e in ecus.values() if e.is_primary), None)
            if primary is None:
                raise NotFound(f"vehicle {vin[:64]!r} has no primary ECU")
            keys = {s: e.public_key for s, e in ecus.items()}
            if pre is not None and pre.primary == primary and pre.keys == keys:
                body, reports = pre.body, pre.reports  # checked against these very keys
            else:
                if len(self._ecu_keys) >= self.config.cache_vehicles:
                    self._ecu_keys.clear()
                self._ecu_keys[vin] = (primary, keys)
                body, reports = self._check_signed(vin, manifest, primary, keys)
            skew = timedelta(seconds=self.config.report_skew_seconds)
            for serial, report in reports.items():
                check_report_freshness(report, self._seen(seen, ecus[serial], report), now, skew)
        finally:
            cur.close()

        def write(conn: Connection) -> dict[str, Any]:
            wcur = conn.connection.cursor()
            try:
                return self._record_manifest(
                    conn,
                    wcur,
                    vid,
                    vin,
                    ecus,
                    body,
                    reports,
                    raw,
                    encoding,
                    now,
                    in_flight,
                    vehicle_attack,
                )
            finally:
                wcur.close()

        return write

    def _ecu_key(self, text: str) -> Key:
        """An ECU's registered key from its stored text, parsed once per text (bounded)."""
        key = self._keys.get(text)
        if key is None:
            key = Key.from_dict(json.loads(text), self.limits)
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[text] = key
        return key

    @staticmethod
    def _seen(
        seen: set[tuple[int, str]], ecu: Any, report: EcuVersionReport
    ) -> set[bytes] | int | None:
        """What :func:`check_report_freshness` compares with: this nonce if it was seen
        (as the vehicle query found it), or the ECU's last counter."""
        if report.nonce is not None:
            return {report.nonce} if (ecu.id, report.nonce.hex()) in seen else set()
        return None if ecu.last_counter is None else int(ecu.last_counter)

    def _record_manifest(
        self,
        conn: Connection,
        cur: Any,
        vid: int,
        vin: str,
        ecus: dict[str, _Ecu],
        body: VehicleVersionManifest,
        reports: dict[str, EcuVersionReport],
        raw: bytes,
        encoding: str,
        now: datetime,
        in_flight: int | None,
        vehicle_attack: str | None,
    ) -> dict[str, Any]:
        """Store an accepted manifest in the caller's transaction: the manifest, the
        vehicle's time, every nonce (one executemany), every ECU's installed image and
        counter (one executemany), the attacks reported; then advance the bundle in flight
        (``in_flight``, read with the ECUs). ``cur`` is a DBAPI cursor of ``conn``.

        Every indicator the manifest carries is answered in ``attacks``, but an attack row
        is stored only where an indicator first appears: when it differs from the one its
        source (that ECU's report, or the Primary's manifest-level indicator,
        ``vehicle_attack``) carried in the previous accepted manifest. A Secondary repeats
        its last indicator until something succeeds; that is one attack, not one a cycle."""
        dialect = conn.dialect.name
        t = _ts(now)
        cur.execute(
            _sql(_INSERT_MANIFEST, dialect), {"vid": vid, "t": t, "enc": encoding, "raw": raw}
        )
        mid = int(cur.fetchone()[0])
        cur.execute(_sql(_MANIFEST_SEEN, dialect), {"vid": vid, "t": t, "attack": body.attack})
        attacks: list[str] = []
        attack_rows: list[dict[str, Any]] = []
        if body.attack:
            attacks.append(body.attack)
            if body.attack != vehicle_attack:
                attack_rows.append({"ecu_id": ecus[body.primary_id].id, "attack": body.attack})
        nonce_params: dict[str, Any] = {"t": t}
        ecu_rows: list[dict[str, Any]] = []
        for serial, r in reports.items():
            ecu = ecus[serial]
            ecu_rows.append(
                {
                    "id": ecu.id,
                    "path": r.installed.filename,
                    "length": r.installed.length,
                    "hashes": _HASHES_JSON(r.installed.hashes),
                    "time": _ts(r.latest_time),
                    "attack": r.attack,
                    # a nonce report leaves the ECU's counter as it is (COALESCE)
                    "counter": None if r.nonce is not None else r.counter,
                }
            )
            if r.nonce is not None:
                i = len(nonce_params) // 2
                nonce_params[f"e{i}"], nonce_params[f"n{i}"] = ecu.id, r.nonce.hex()
            if r.attack:
                attacks.append(f"{serial}: {r.attack}")
                if r.attack != ecu.last_attack:
                    attack_rows.append({"ecu_id": ecu.id, "attack": r.attack})
        if len(nonce_params) > 1:
            n = len(nonce_params) // 2
            cur.execute(_insert_nonces_sql(n, dialect), nonce_params)
        cur.executemany(_sql(_ECU_REPORTED, dialect), ecu_rows)
        if attack_rows:
            conn.execute(
                inv.attacks.insert(),
                [
                    {**a, "vehicle_id": vid, "manifest_id": mid, "reported_at": t}
                    for a in attack_rows
                ],
            )
        bundle = None
        if in_flight is not None:
            bundle = self._advance_bundle(conn, int(in_flight), vid, vin, ecus, reports, now)
        return {"accepted": True, "manifest": mid, "attacks": attacks, "bundle": bundle}

    def _advance_bundle(
        self,
        conn: Connection,
        bundle_id: int,
        vid: int,
        vin: str,
        ecus: dict[str, Any],
        reports: dict[str, EcuVersionReport],
        now: datetime,
    ) -> dict[str, Any] | None:
        """Move the bundle in flight on: an assignment is installed when its ECU reports
        the assigned image (same name, length and every common hash), failed when the ECU
        reports an attack indicator that is new to it instead. The bundle ends when every
        assignment did; then the next bundle (or empty targets) goes out.

        An indicator is new to an assignment unless it is the assignment's
        ``stale_attack``: the one the ECU carried when the bundle went out, reported
        unchanged since (a Secondary repeats its last indicator until something succeeds,
        and that old one already failed, or predates, this bundle). A report with another
        indicator, or with none, ends the staleness: from then on any indicator fails it."""
        by_id = {e.id: s for s, e in ecus.items()}
        rows = conn.execute(
            sa.select(inv.assignments).where(inv.assignments.c.bundle_id == bundle_id)
        ).all()
        t = _ts(now)
        states: list[str] = []
        for a in rows:
            state, reason = a.state, a.reason
            r = reports.get(by_id.get(a.ecu_id, ""))
            if a.state == inv.IN_FLIGHT and r is not None:
                stale = a.stale_attack
                if same_image(r.installed, _assigned_image(a)):
                    state, reason = inv.INSTALLED, None
                elif r.attack and r.attack != stale:
                    state, reason = inv.FAILED, f"ECU reported: {r.attack}"[:1000]
                elif stale is not None and r.attack != stale:
                    stale = None  # the old indicator is gone: any later one is new
                if state != a.state or stale != a.stale_attack:
                    conn.execute(
                        inv.assignments.update()
                        .where(inv.assignments.c.id == a.id)
                        .values(state=state, reason=reason, updated_at=t, stale_attack=stale)
                    )
            states.append(state)
        if inv.FAILED in states:
            conn.execute(
                inv.assignments.update()
                .where(
                    inv.assignments.c.bundle_id == bundle_id,
                    inv.assignments.c.state == inv.IN_FLIGHT,
                )
                .values(state=inv.FAILED, reason="another image of the bundle failed", updated_at=t)
            )
            final = inv.FAILED
        elif all(s == inv.INSTALLED for s in states):
            final = inv.INSTALLED
        else:
            return {"id": bundle_id, "state": inv.IN_FLIGHT}
        conn.execute(
            inv.bundles.update()
            .where(inv.bundles.c.id == bundle_id)
            .values(state=final, finished_at=t)
        )
        if self._issue_bundle(conn, vid, vin, now) is None:
            self._publish(conn, vid, vin, now, new_targets=[])
        return {"id": bundle_id, "state": final}

    # --- keys ------------------------------------------------------------------------------

    def rotate_key(
        self, role: str, offline_dir: Path, now: datetime | None = None, *, scheme: str = ED25519
    ) -> int:
        """Replace the key of ``role`` (root, targets, snapshot or timestamp) with a new one
        and sign the next Director root with the offline root key; for root, the new root is
        signed by the old and the new root keys (§5.4.4.3). Every vehicle's metadata is then
        re-signed with the current keys. Also the yearly way to renew the root's expiry.
        Returns the new root version. Run it with the service stopped, or let the service
        pick it up (:meth:`reload_keys`)."""
        if role not in ("root", "targets", "snapshot", "timestamp"):
            raise Invalid(f"unknown role {role!r}")
        now = now or self.clock()
        offline = FileKeySource(offline_dir)
        old_root = offline.signers("root")
        if not old_root:
            raise PermissionError(f"the offline Director root key is needed ({offline_dir})")
        current = decode(self.root_files[max(self.root_files)][JSON], self.limits, role_type="root")
        signers: dict[str, list[Any]] = {"root": old_root, **self._signers()}
        b = RepositoryBuilder("director", signers, now, encodings=self.encodings)
        cur = current.signed
        b.root.version = cur.version
        b.root.keys = dict(cur.keys)
        b.root.roles = {r: copy.deepcopy(e) for r, e in cur.roles.items()}
        b.root.consistent_snapshot = cur.consistent_snapshot
        new = generate(scheme)
        b.rotate_keys(role, [new], revoke=list(cur.roles[role].keyids))
        b.publish(now)
        version = b.root.version
        for enc, data in b.root_history[-1].items():
            atomic_write(self.dir / "root" / f"{version}.root.{enc}", data, mode=0o644)
        if role == "root":
            offline.replace("root", new)
        else:
            assert isinstance(self.keys, FileKeySource)
            self.keys.replace(role, new)
        self.reload_keys(force=True)
        return version

    def reload_keys(self, *, force: bool = False) -> bool:
        """Pick up a root or key rotation made by another process; when one happened, every
        vehicle's metadata is re-signed with the current keys."""
        latest = max(
            (int(p.name.split(".", 1)[0]) for p in (self.dir / "root").glob("*.root.json")),
            default=0,
        )
        if not force and latest == max(self.root_files):
            return False
        self.root_files = self._load_root()
        if isinstance(self.keys, FileKeySource):
            self.keys = FileKeySource(self.keys.directory)
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(inv.vehicle_metadata.c.vin, inv.vehicle_metadata.c.vehicle_id)
            ).all()
        for vin, vid in rows:
            with self.engine.begin() as conn:
                self._publish(conn, vid, vin, now, resign_all=True)
        return True

    # --- per-vehicle metadata ---------------------------------------------------------------

    def _signers(self) -> dict[str, list[Any]]:
        return {r: self.keys.signers(r) for r in ("targets", "snapshot", "timestamp")}

    def _margin(self, role: str) -> timedelta:
        return self.config.expiry[role] / 2

    def _publish(
        self,
        conn: Connection,
        vid: int,
        vin: str,
        now: datetime,
        *,
        new_targets: list[TargetFile] | None = None,
        resign_all: bool = False,
    ) -> int:
        """Re-sign this vehicle's metadata in the current transaction: targets when
        ``new_targets`` is given (or it nears expiry, or ``resign_all`` after a key
        rotation), snapshot when targets changed (or it nears expiry), timestamp always.
        Versions continue from the stored ones."""
        vm = inv.vehicle_metadata
        row = conn.execute(sa.select(vm).where(vm.c.vin == vin).with_for_update()).first()
        root = decode(self.root_files[max(self.root_files)][JSON], self.limits, role_type="root")
        root_keys = [root.signed.keys[k] for k in root.signed.roles["root"].keyids]
        b = RepositoryBuilder(
            "director",
            self._signers(),
            now,
            keys={"root": root_keys},
            expiry=self.config.expiry,
            vehicle_id=vin,
            encodings=self.encodings,
        )
        if row is not None:
            stored = decode(row.targets_json, self.limits, role_type="targets").signed
            assert isinstance(stored, Targets)
            b.targets.targets = stored.targets
            b.targets.expires = stored.expires
            b.targets.version = row.targets_version
            b.snapshot.version = row.snapshot_version
            b.timestamp.version = row.timestamp_version
            for enc in self.encodings:
                b.files[enc]["targets"] = getattr(row, f"targets_{enc}")
                b.files[enc]["snapshot"] = getattr(row, f"snapshot_{enc}")
            if new_targets is None and (
                resign_all or stored.expires - now <= self._margin("targets")
            ):
                b.mark("targets")
            if datetime.fromtimestamp(row.snapshot_expires, UTC) - now <= self._margin("snapshot"):
                b.mark("snapshot")
        if new_targets is not None and (row is not None or new_targets):
            b.targets.targets = {tf.path: tf for tf in new_targets}
            b.mark("targets")
        if row is not None or new_targets:
            b.publish(now)  # a new vehicle with no images keeps the builder's version 1
        values: dict[str, Any] = {
            "vehicle_id": vid,
            "targets_version": b.targets.version,
            "snapshot_version": b.snapshot.version,
            "timestamp_version": b.timestamp.version,
            "snapshot_expires": _ts(b.snapshot.expires),
            "timestamp_expires": _ts(b.timestamp.expires),
            "updated_at": _ts(now),
        }
        for enc in (JSON, DER):
            for role in ("targets", "snapshot", "timestamp"):
                values[f"{role}_{enc}"] = b.files[enc][role] if enc in self.encodings else None
        if row is None:
            conn.execute(vm.insert().values(vin=vin, **values))
        else:
            conn.execute(vm.update().where(vm.c.vin == vin).values(**values))
        self.invalidate(vin)
        return b.targets.version

    def invalidate(self, vin: str) -> None:
        with self._cache_lock:
            self._cache.pop(vin, None)

    def _cached(self, vin: str) -> _Cached | None:
        """The vehicle's signed files: from memory, or one indexed lookup; re-signs the
        timestamp (and what else nears expiry) first when needed."""
        c = self._fresh(vin)
        if c is not None:
            return c
        mono = time.monotonic()
        now = self.clock()
        margin = _ts(now) + int(self._margin("timestamp").total_seconds())
        vm = inv.vehicle_metadata
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(vm).where(vm.c.vin == vin)).first()
        if row is None:
            return None
        if row.timestamp_expires <= margin:
            with self.engine.begin() as conn:
                fresh = conn.execute(
                    sa.select(vm.c.timestamp_expires).where(vm.c.vin == vin).with_for_update()
                ).first()
                if fresh is not None and fresh.timestamp_expires <= margin:
                    self._publish(conn, row.vehicle_id, vin, now)
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(vm).where(vm.c.vin == vin)).first()
            assert row is not None
        files: dict[str, bytes] = {}
        for enc in self.encodings:
            files[f"timestamp.{enc}"] = getattr(row, f"timestamp_{enc}")
            for role in ("snapshot", "targets"):
                data = getattr(row, f"{role}_{enc}")
                files[f"{getattr(row, f'{role}_version')}.{role}.{enc}"] = data
                files[f"{role}.{enc}"] = data
        c = _Cached(
            mono,
            files,
            {
                "targets": row.targets_version,
                "snapshot": row.snapshot_version,
                "timestamp": row.timestamp_version,
            },
            row.timestamp_expires,
        )
        with self._cache_lock:
            self._cache[vin] = c
            while len(self._cache) > self.config.cache_vehicles:
                self._cache.popitem(last=False)
        return c

    def _fresh(self, vin: str) -> _Cached | None:
        """The vehicle's cache entry if it may be served as it is: younger than
        ``cache_seconds`` and its timestamp not near expiry. Memory only."""
        with self._cache_lock:
            c = self._cache.get(vin)
            if c is None:
                return None
            self._cache.move_to_end(vin)
        if time.monotonic() - c.fetched >= self.config.cache_seconds:
            return None
        margin = _ts(self.clock()) + int(self._margin("timestamp").total_seconds())
        return c if c.timestamp_expires > margin else None

    def cached_file(self, vin: str, name: str) -> bytes | None:
        """What :meth:`metadata_file` answers, when the answer is a fresh cache hit; None
        otherwise (ask :meth:`metadata_file`). Never touches the database or a key, so the
        HTTP service may call it on its event loop."""
        c = self._fresh(vin)
        if c is None:
            return None
        parts = name.split(".")
        if len(parts) == 3 and parts[1] == "root" and parts[0].isdigit():
            return self.root_files.get(int(parts[0]), {}).get(parts[2])
        if len(parts) == 2 and parts[0] == "root":
            return self.root_files[max(self.root_files)].get(parts[1])
        return c.files.get(name)

    def metadata_file(self, vin: str, name: str) -> bytes | None:
        """A per-vehicle metadata file by name (``N.root.json``, ``timestamp.der``, ...)."""
        parts = name.split(".")
        if len(parts) == 3 and parts[1] == "root" and parts[0].isdigit():
            entry = self.root_files.get(int(parts[0]))
            if entry is None:
                return None
            if not VIN_RE.match(vin) or self._cached(vin) is None:
                return None
            return entry.get(parts[2])
        if len(parts) == 2 and parts[0] == "root":
            if self._cached(vin) is None:
                return None
            return self.root_files[max(self.root_files)].get(parts[1])
        if not VIN_RE.match(vin):
            return None
        c = self._cached(vin)
        return None if c is None else c.files.get(name)

    def refresh_expiring(self) -> int:
        """Re-sign the metadata of every vehicle whose timestamp nears expiry."""
        now = self.clock()
        margin = _ts(now) + int(self._margin("timestamp").total_seconds())
        vm = inv.vehicle_metadata
        with self.engine.connect() as conn:
            due = conn.execute(
                sa.select(vm.c.vin, vm.c.vehicle_id).where(vm.c.timestamp_expires <= margin)
            ).all()
        for vin, vid in due:
            with self.engine.begin() as conn:
                self._publish(conn, vid, vin, now)
        return len(due)


def _assigned_image(assignment: Any) -> ImageIdentity:
    """The image an assignment row names."""
    return ImageIdentity(assignment.target_path, assignment.length, json.loads(assignment.hashes))


def key_from_json(d: Any, limits: Limits | None = None) -> Key:
    """An ECU public key from its TUF JSON form; Invalid if it is not one."""
    try:
        return Key.from_dict(d, limits or Limits.primary())
    except UptaneError as e:
        raise Invalid(f"bad public key: {e}") from None


__all__ = ["BadEcuId", "Conflict", "Director", "EcuSpec", "Invalid", "NotFound"]
