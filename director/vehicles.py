"""The Director's inventory of vehicles and ECUs (§5.3.2.2): registering them, and every
listing the OEM reads (vehicles, one vehicle's status, assignments, reported attacks), in
whole or in pages (:mod:`director.paging`). Many vehicles at once: :mod:`director.bulk`.

Registering a vehicle signs its first metadata (:class:`director.publishing.Publisher`);
nothing else here writes metadata or moves an assignment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director import inventory as inv
from director import paging
from director.common import ECU_RE, HWID_RE, VIN_RE, Conflict, Invalid, NotFound, epoch, iso
from director.paging import Page
from director.publishing import Publisher
from uptane.encryption import EncryptionPublicKey
from uptane.errors import UptaneError
from uptane.keys import Key
from uptane.limits import Limits


@dataclass
class EcuSpec:
    """An ECU to register: its serial (ECU id), hardware id, public key, primary flag,
    and its encryption public key (issue 17; None: images go to it unencrypted)."""

    serial: str
    hardware_id: str
    public_key: Key
    primary: bool = False
    encryption_key: EncryptionPublicKey | None = None


def key_from_json(d: Any, limits: Limits | None = None) -> Key:
    """An ECU public key from its TUF JSON form; Invalid if it is not one."""
    try:
        return Key.from_dict(d, limits or Limits.primary())
    except UptaneError as e:
        raise Invalid(f"bad public key: {e}") from None


def encryption_key_from_json(d: Any, limits: Limits | None = None) -> EncryptionPublicKey:
    """An ECU encryption public key from its JSON form (keytype x25519); Invalid if it is
    not one (a signing key in its place included)."""
    try:
        return EncryptionPublicKey.from_dict(d, limits or Limits.primary())
    except UptaneError as e:
        raise Invalid(f"bad encryption key: {e}") from None


def _check_ecu(e: EcuSpec) -> None:
    if not ECU_RE.match(e.serial):
        raise Invalid(f"bad ECU serial {e.serial[:64]!r}")
    if not HWID_RE.match(e.hardware_id):
        raise Invalid(f"bad hardware id {e.hardware_id[:64]!r}")
    try:
        e.public_key.load()
    except UptaneError as err:
        raise Invalid(f"ECU {e.serial}: {err}") from None


def check_vehicle(vin: str, ecus: list[EcuSpec], limits: Limits) -> None:
    """Invalid (or the core's LimitExceeded) unless ``vin`` and ``ecus`` may be registered
    as a new vehicle: a good VIN, 1 to ``max_ecus`` ECUs, exactly one primary, unique
    serials, good hardware ids and keys."""
    if not VIN_RE.match(vin):
        raise Invalid("VIN must be 1-64 letters, digits, '-' or '_'")
    if not ecus:
        raise Invalid("a vehicle needs at least one ECU")
    if sum(e.primary for e in ecus) != 1:
        raise Invalid("a vehicle needs exactly one primary ECU")
    limits.check_count("ECUs", len(ecus), limits.max_ecus)
    serials = [e.serial for e in ecus]
    if len(set(serials)) != len(serials):
        raise Invalid("ECU serials must be unique within a vehicle")
    for e in ecus:
        _check_ecu(e)


def _encryption_values(key: EncryptionPublicKey | None) -> dict[str, Any]:
    """The ``ecus`` columns of an encryption public key (both None without one)."""
    if key is None:
        return {"encryption_key": None, "encryption_key_id": None}
    return {
        "encryption_key": json.dumps(key.to_dict(), sort_keys=True),
        "encryption_key_id": key.keyid,
    }


def ecu_values(vid: int, e: EcuSpec) -> dict[str, Any]:
    """The ``ecus`` row of a new ECU of vehicle ``vid``."""
    return {
        "vehicle_id": vid,
        "serial": e.serial,
        "hardware_id": e.hardware_id,
        "public_key": json.dumps(e.public_key.to_dict(), sort_keys=True),
        "key_id": e.public_key.keyid,
        "is_primary": e.primary,
        **_encryption_values(e.encryption_key),
    }


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    """The primary key of the row an INSERT just made."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database returned no primary key for an insert")
    return int(key[0])


def _ecu_dict(e: Any) -> dict[str, Any]:
    """One ECU as the vehicle status shows it."""
    return {
        "serial": e.serial,
        "hardware_id": e.hardware_id,
        "primary": bool(e.is_primary),
        "key_id": e.key_id,
        "public_key": json.loads(e.public_key),
        "encryption_key": None if e.encryption_key is None else json.loads(e.encryption_key),
        "installed": None
        if e.installed_path is None
        else {
            "path": e.installed_path,
            "length": e.installed_length,
            "hashes": json.loads(e.installed_hashes or "{}"),
        },
        "release_counter": e.installed_release_counter,
        "last_report_time": iso(e.last_report_time),
        "last_attack": e.last_attack,
        # named unreachable by the Primary (no version claim taken): since when, why, and
        # when it last answered the Primary; None once it reports again
        "unreachable": None
        if e.unreachable_since is None
        else {
            "since": iso(e.unreachable_since),
            "reason": e.unreachable_reason,
            "last_seen": iso(e.last_seen),
        },
    }


def _assignment_dict(r: Any) -> dict[str, Any]:
    return {
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
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    }


class Fleet:
    """Vehicles and ECUs in the inventory, and the OEM's views of them."""

    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        *,
        clock: Callable[[], datetime],
        limits: Limits,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.clock = clock
        self.limits = limits

    # --- registration -----------------------------------------------------------------------

    def register_vehicle(self, vin: str, ecus: Iterable[EcuSpec]) -> dict[str, Any]:
        """Add a vehicle with its ECUs (exactly one primary) and sign its first metadata."""
        ecus = list(ecus)
        check_vehicle(vin, ecus, self.limits)
        now = self.clock()
        with self.engine.begin() as conn:
            if conn.execute(sa.select(inv.vehicles.c.id).where(inv.vehicles.c.vin == vin)).first():
                raise Conflict(f"vehicle {vin} is already registered")
            vid = _inserted_id(
                conn.execute(inv.vehicles.insert().values(vin=vin, created_at=epoch(now)))
            )
            for e in ecus:
                self._insert_ecu(conn, vid, e)
            self.publisher.publish(conn, vid, vin, now, new_targets=[])
        return self.vehicle_status(vin)

    def add_ecu(self, vin: str, ecu: EcuSpec) -> dict[str, Any]:
        """Add a secondary ECU to a registered vehicle."""
        _check_ecu(ecu)
        if ecu.primary:
            raise Invalid("a vehicle has exactly one primary, registered with the vehicle")
        with self.engine.begin() as conn:
            vid = self.vehicle_id(conn, vin)
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
        return self.vehicle_status(vin)

    @staticmethod
    def _insert_ecu(conn: Connection, vid: int, e: EcuSpec) -> None:
        conn.execute(inv.ecus.insert().values(**ecu_values(vid, e)))

    def set_encryption_key(
        self, vin: str, serial: str, key: EncryptionPublicKey | None
    ) -> dict[str, Any]:
        """Register (or, with None, remove) an ECU's encryption public key: a re-provisioned
        ECU reports ``encryption-key-mismatch`` until its current key is here. Bundles
        already out keep the key they were wrapped to; the next one uses this."""
        with self.engine.begin() as conn:
            vid = self.vehicle_id(conn, vin)
            done = conn.execute(
                inv.ecus.update()
                .where(inv.ecus.c.vehicle_id == vid, inv.ecus.c.serial == serial)
                .values(**_encryption_values(key))
            )
            if done.rowcount != 1:
                raise NotFound(f"vehicle {vin} has no ECU {serial[:64]!r}")
        return self.vehicle_status(vin)

    # --- lookups ----------------------------------------------------------------------------

    @staticmethod
    def vehicle_id(conn: Connection, vin: str) -> int:
        """The vehicle's row id; NotFound if it is not registered."""
        row = conn.execute(sa.select(inv.vehicles.c.id).where(inv.vehicles.c.vin == vin)).first()
        if row is None:
            raise NotFound(f"unknown vehicle {vin[:64]!r}")
        return int(row.id)

    @staticmethod
    def ecus_of(conn: Connection, vid: int) -> list[Any]:
        """The vehicle's ECU rows, in registration order."""
        return list(
            conn.execute(
                sa.select(inv.ecus).where(inv.ecus.c.vehicle_id == vid).order_by(inv.ecus.c.id)
            ).all()
        )

    # --- listings ---------------------------------------------------------------------------

    def list_vehicles(self) -> list[dict[str, Any]]:
        """Every vehicle, by VIN (the whole fleet: the API answers pages,
        :meth:`page_vehicles`)."""
        with self.engine.connect() as conn:
            rows = conn.execute(_vehicles_query().order_by(inv.vehicles.c.vin)).all()
        return [_vehicle_dict(r) for r in rows]

    def page_vehicles(self, page: Page) -> dict[str, Any]:
        """One page of vehicles in registration order (:mod:`director.paging`)."""
        with self.engine.connect() as conn:
            return paging.fetch(conn, _vehicles_query(), inv.vehicles.c.id, page, _vehicle_dict)

    def vehicle_status(self, vin: str) -> dict[str, Any]:
        """Everything the OEM sees about one vehicle."""
        vm = inv.vehicle_metadata
        with self.engine.connect() as conn:
            vid = self.vehicle_id(conn, vin)
            v = conn.execute(sa.select(inv.vehicles).where(inv.vehicles.c.id == vid)).one()
            ecus = self.ecus_of(conn, vid)
            meta = conn.execute(
                sa.select(
                    vm.c.targets_version,
                    vm.c.snapshot_version,
                    vm.c.timestamp_version,
                    vm.c.timestamp_expires,
                ).where(vm.c.vin == vin)
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
            "created_at": iso(v.created_at),
            "last_manifest_at": iso(v.last_manifest_at),
            "manifests_accepted": manifests,
            "ecus": [_ecu_dict(e) for e in ecus],
            "metadata": None
            if meta is None
            else {
                "targets": meta.targets_version,
                "snapshot": meta.snapshot_version,
                "timestamp": meta.timestamp_version,
                "timestamp_expires": iso(meta.timestamp_expires),
            },
            "bundles": [
                {
                    "id": b.id,
                    "state": b.state,
                    "created_at": iso(b.created_at),
                    "finished_at": iso(b.finished_at),
                    "targets_version": b.targets_version,
                }
                for b in bundles
            ],
            "assignments": self.list_assignments(vin=vin),
            "attacks": self.list_attacks(vin=vin),
        }

    def list_assignments(
        self, *, vin: str | None = None, state: str | None = None, ids: list[int] | None = None
    ) -> list[dict[str, Any]]:
        """Assignments, oldest first: of one vehicle, in one state, or with these ids."""
        q = _assignments_query(vin, state, ids).order_by(inv.assignments.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [_assignment_dict(r) for r in rows]

    def page_assignments(
        self, page: Page, *, vin: str | None = None, state: str | None = None
    ) -> dict[str, Any]:
        """One page of assignments, oldest first, of one vehicle or in one state."""
        with self.engine.connect() as conn:
            return paging.fetch(
                conn, _assignments_query(vin, state), inv.assignments.c.id, page, _assignment_dict
            )

    def list_attacks(self, *, vin: str | None = None) -> list[dict[str, Any]]:
        """Attacks ECUs reported, oldest first (of one vehicle)."""
        q = _attacks_query(vin).order_by(inv.attacks.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [_attack_dict(r) for r in rows]

    def page_attacks(self, page: Page, *, vin: str | None = None) -> dict[str, Any]:
        """One page of reported attacks, oldest first (of one vehicle)."""
        with self.engine.connect() as conn:
            return paging.fetch(conn, _attacks_query(vin), inv.attacks.c.id, page, _attack_dict)


def _vehicles_query() -> sa.Select[Any]:
    """Vehicles with their number of ECUs (one indexed count per vehicle)."""
    e = inv.ecus
    count = (
        sa.select(sa.func.count())
        .where(e.c.vehicle_id == inv.vehicles.c.id)
        .scalar_subquery()
        .label("ecu_count")
    )
    return sa.select(inv.vehicles, count)


def _vehicle_dict(r: Any) -> dict[str, Any]:
    return {
        "vin": r.vin,
        "ecus": int(r.ecu_count),
        "created_at": iso(r.created_at),
        "last_manifest_at": iso(r.last_manifest_at),
    }


def _assignments_query(
    vin: str | None, state: str | None, ids: list[int] | None = None
) -> sa.Select[Any]:
    a = inv.assignments
    q = (
        sa.select(a, inv.vehicles.c.vin, inv.ecus.c.serial)
        .join(inv.vehicles, inv.vehicles.c.id == a.c.vehicle_id)
        .join(inv.ecus, inv.ecus.c.id == a.c.ecu_id)
    )
    if vin is not None:
        q = q.where(inv.vehicles.c.vin == vin)
    if state is not None:
        q = q.where(a.c.state == state)
    if ids is not None:
        q = q.where(a.c.id.in_(ids))
    return q


def _attacks_query(vin: str | None) -> sa.Select[Any]:
    q = (
        sa.select(inv.attacks, inv.vehicles.c.vin, inv.ecus.c.serial)
        .join(inv.vehicles, inv.vehicles.c.id == inv.attacks.c.vehicle_id)
        .outerjoin(inv.ecus, inv.ecus.c.id == inv.attacks.c.ecu_id)
    )
    if vin is not None:
        q = q.where(inv.vehicles.c.vin == vin)
    return q


def _attack_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "vin": r.vin,
        "ecu": r.serial,
        "attack": r.attack,
        "manifest": r.manifest_id,
        "reported_at": iso(r.reported_at),
    }


__all__ = [
    "EcuSpec",
    "Fleet",
    "check_vehicle",
    "ecu_values",
    "encryption_key_from_json",
    "key_from_json",
]
