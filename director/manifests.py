"""Vehicle version manifests (§5.3.2.1): checked against the inventory, recorded, and the
bundle in flight moved on, with group commit (:mod:`director.groupcommit`).

On the Director's data path this is the way back from the vehicle: a manifest's reports
go to :meth:`director.bundles.Bundles.advance` in the transaction that records them.

A manifest is decoded, and its signatures and identities checked against the keys the
Director last read for that vehicle, in the caller's thread (at most one per core); the
rest is one checked unit of the writer's next batch, which re-reads the vehicle's ECUs and
keys in the transaction and repeats those checks unless the keys are exactly the ones
checked against. The statements run as SQL text on the DBAPI cursor of the writer's
connection (the same on SQLite and PostgreSQL): SQLAlchemy's execution cost more than the
statements (bench figure 7).

**Client input never answers 500** (issue 15). What a manifest carries has passed the
core's integer and string policy (:mod:`uptane.policy`) when it decoded. The check phase
then builds every row the write will store and checks that each value fits the inventory
(:func:`director.storable.check_storable`: integers in BIGINT, text without NUL, valid
UTF-8), so a value the database would refuse fails that manifest alone, as a 422 with its
reason, before its write: the batch keeps its path without savepoints. Should the
database still refuse a value in a write, the writer runs that batch again with a
savepoint per unit, and the manifest gets 422 with the database's reason, logged; the
others of its batch are stored.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director import inventory as inv
from director.bundles import Absence, Bundles
from director.common import VIN_RE, NotFound, Unavailable, epoch, log
from director.config import Config
from director.groupcommit import GroupCommit
from director.lifecycle import IN_FLIGHT
from director.publishing import Publisher
from director.retention import replay_horizon
from director.storable import StorageRefused, check_storable, first_line
from uptane.errors import ReplayAttack, UptaneError
from uptane.keys import Key
from uptane.limits import Limits
from uptane.manifest import (
    EcuVersionReport,
    SignedManifest,
    VehicleVersionManifest,
    check_manifest_against_inventory,
    check_report_freshness,
    decode_vehicle_manifest,
)
from uptane.metadata import JSON

# ``:name`` parameters, rewritten for psycopg2 by :func:`_sql`.
#: the vehicle, the Primary's last manifest-level indicator, its bundle in flight, and its
#: ECUs in order (one row per ECU; ECU columns NULL for a vehicle without ECUs)
_VEHICLE_ECUS = (
    "SELECT v.id, v.last_attack, (SELECT b.id FROM bundles b WHERE b.vehicle_id = v.id"
    " AND b.state = :in_flight LIMIT 1), e.id, e.serial, e.public_key, e.is_primary,"
    " e.last_counter, e.last_attack, e.unreachable_since, e.last_report_time, {seen}"
    " FROM vehicles v"
    " LEFT OUTER JOIN ecus e"
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
    " last_counter = COALESCE(:counter, last_counter), installed_release_counter = :rc"
    " WHERE id = :id"
)
#: a report from an ECU named unreachable before ends that (only for those ECUs: the
#: column is indexed for the deadline sweep, and most reports leave it untouched)
_ECU_BACK = "UPDATE ecus SET unreachable_since = NULL, unreachable_reason = NULL WHERE id = :id"
#: an ECU the Primary names unreachable: no version claim, only since when (kept from the
#: first manifest of the streak), why, and when it last answered the Primary
_ECU_UNREACHABLE = (
    "UPDATE ecus SET unreachable_since = COALESCE(unreachable_since, :t),"
    " unreachable_reason = :reason, last_seen = :seen WHERE id = :id"
)

#: json.dumps(hashes, sort_keys=True) as the ECU rows store installed hashes, the encoder
#: built once
_HASHES_JSON = json.JSONEncoder(sort_keys=True).encode

#: parsed ECU keys kept in memory (by their stored text) before the cache starts over
_MAX_PARSED_KEYS = 4096


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
    unreachable_since: int | None
    #: the latest time of the last report accepted from it (epoch seconds)
    last_report_time: int | None


@dataclass
class _Prechecked:
    """What a manifest's signatures and identities were checked against before it was
    queued: the Primary's serial and every ECU's stored key text, as cached."""

    primary: str
    keys: dict[str, str]
    body: VehicleVersionManifest
    reports: dict[str, EcuVersionReport]


@dataclass
class _Vehicle:
    """What the writer read of a vehicle for one manifest (:data:`_VEHICLE_ECUS`)."""

    id: int
    attack: str | None
    in_flight: int | None
    ecus: dict[str, _Ecu]
    #: (ECU id, nonce hex) pairs of this manifest stored before
    seen: set[tuple[int, str]]

    @property
    def primary(self) -> str | None:
        return next((e.serial for e in self.ecus.values() if e.is_primary), None)

    @property
    def keys(self) -> dict[str, str]:
        return {s: e.public_key for s, e in self.ecus.items()}


@dataclass
class _Accepted:
    """A manifest that passed every check, as the write stores it: the parameters of
    every statement, built and checked in the check phase (:func:`_check_storable`)."""

    vin: str
    vehicle: _Vehicle
    body: VehicleVersionManifest
    reports: dict[str, EcuVersionReport]
    raw: bytes
    encoding: str
    now: datetime
    nonce_params: dict[str, Any]
    ecu_rows: list[dict[str, Any]]
    absent: dict[str, Absence]
    absence_rows: list[dict[str, Any]]
    attacks: list[str]
    attack_rows: list[dict[str, Any]]

    def rows(self) -> list[dict[str, Any]]:
        """The parameters of every statement the write runs for this manifest."""
        return [self.nonce_params, *self.ecu_rows, *self.absence_rows, *self.attack_rows]


class ManifestIntake:
    """Checks and records vehicle version manifests; owns the group-commit writer."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        bundles: Bundles,
        publisher: Publisher,
        *,
        clock: Callable[[], datetime],
        limits: Limits,
    ) -> None:
        self.engine = engine
        self.config = config
        self.bundles = bundles
        self.publisher = publisher
        self.clock = clock
        self.limits = limits
        #: parsed ECU keys by their stored JSON text (the text is the key: no staleness)
        self._keys: dict[str, Key] = {}
        #: per VIN, the Primary's serial and every ECU's stored key text, as the writer last
        #: read them: manifests are checked against it before they queue, and the writer
        #: compares it with the rows it reads (a stale entry only costs a second check)
        self._ecu_keys: dict[str, tuple[str, dict[str, str]]] = {}
        #: manifests share transactions and durable commits (director/groupcommit.py)
        self.writer = GroupCommit(engine)
        #: manifests decoded and signature-checked at once: one per core. More only queue
        #: for Python's GIL, and the writer thread then waits behind all of them each time
        #: a statement hands the GIL back (bench/README.md, figure 7).
        self._cpu = _Slots(max(1, os.cpu_count() or 1))

    def forget(self, vin: str) -> None:
        """Drop what is cached of ``vin``'s ECU keys (its ECUs changed)."""
        self._ecu_keys.pop(vin, None)

    def process(
        self, vin: str, data: bytes, encoding: str = JSON, *, earliest: datetime | None = None
    ) -> dict[str, Any]:
        """Check a vehicle version manifest against the inventory and record it.

        In order: the bytes decode (bounded); the vehicle is known; the Primary's signature
        verifies with its registered key and the manifest names this vehicle and Primary;
        every report is from a registered ECU of this vehicle, once, and every registered
        ECU is represented by its report or by the Primary's unreachable entry; each
        report verifies with its ECU's key; no nonce is reused and no counter goes back;
        each report's time is near now. Only then, in the same transaction: the manifest,
        nonces/counters, installed images, reported attacks and unreachable ECUs (no
        version claim) are stored, and the bundle in flight advances (an unreachable ECU's
        assignment fails past the deadline). Any failure raises and changes nothing. The
        answer comes only once the batch's commit is durable. ``earliest``: a manifest
        carried back from an offline vehicle (:mod:`director.offline`) may have reports
        down to that time, not only near now."""
        if not VIN_RE.match(vin):  # never a lookup with a name no vehicle can have
            raise NotFound(f"unknown vehicle {vin[:64]!r}")
        slot = self._cpu.acquire()
        try:
            manifest = decode_vehicle_manifest(data, self.limits, encoding)
            now = self.clock()
            pre = self._precheck(vin, manifest)
        finally:
            slot.release()
        result = self._write(
            vin, lambda conn: self._unit(conn, vin, manifest, pre, data, encoding, now, earliest)
        )
        if result["bundle"] is not None:
            self.publisher.invalidate(vin)  # again, now that the new metadata is committed
        return result

    def _write(
        self, vin: str, check: Callable[[Connection], Callable[[Connection], dict[str, Any]]]
    ) -> dict[str, Any]:
        """Run one manifest's unit in the writer's next batch; the database's errors
        become that manifest's answer: a nonce stored first by a concurrent manifest is a
        replay (409), a value the database refuses is :class:`StorageRefused` (422), the
        database out of reach is :class:`Unavailable` (503). Each is logged."""
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            return self.writer.run_checked(check)
        except (sa.exc.IntegrityError, dbapi.IntegrityError):
            # a concurrent manifest (another process) stored the same nonce first
            raise ReplayAttack("a nonce in this manifest was just used") from None
        except (sa.exc.OperationalError, dbapi.OperationalError) as e:
            log.warning("manifest of %s not stored: database unavailable: %s", vin[:64], e)
            raise Unavailable(f"the inventory database is unavailable: {first_line(e)}") from None
        except (sa.exc.DBAPIError, dbapi.Error, OverflowError, ValueError, UnicodeError) as e:
            reason = f"{type(e).__name__}: {first_line(e)}"
            log.warning(
                "manifest of %s refused: the database refused a value: %s", vin[:64], reason
            )
            raise StorageRefused(
                f"manifest refused: the database refused a value ({reason})"
            ) from None

    # --- checks -----------------------------------------------------------------------------

    def _check_signed(
        self,
        vin: str,
        manifest: SignedManifest[VehicleVersionManifest],
        primary: str,
        keys: dict[str, str],
    ) -> tuple[VehicleVersionManifest, dict[str, EcuVersionReport]]:
        """The identity and signature checks of :meth:`process` against ``keys`` (serial
        -> stored key text) and the Primary ``primary`` (the core's §5.3.2.1 rule)."""
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

    def _ecu_key(self, text: str) -> Key:
        """An ECU's registered key from its stored text, parsed once per text (bounded)."""
        key = self._keys.get(text)
        if key is None:
            key = Key.from_dict(json.loads(text), self.limits)
            if len(self._keys) >= _MAX_PARSED_KEYS:
                self._keys.clear()
            self._keys[text] = key
        return key

    def _unit(
        self,
        conn: Connection,
        vin: str,
        manifest: SignedManifest[VehicleVersionManifest],
        pre: _Prechecked | None,
        raw: bytes,
        encoding: str,
        now: datetime,
        earliest: datetime | None = None,
    ) -> Callable[[Connection], dict[str, Any]]:
        """The part of :meth:`process` inside the writer's transaction: every check,
        reading only, then the write that records the manifest (a checked unit of
        :meth:`director.groupcommit.GroupCommit.run_checked`)."""
        # the nonce each report carries, by ECU serial (a serial reported twice is refused
        # by the identity checks before these are used)
        nonces = {
            r.signed.ecu_id: r.signed.nonce.hex()
            for r in manifest.signed.reports
            if r.signed.nonce is not None
        }
        vehicle = self._read_vehicle(conn, vin, nonces)
        primary = vehicle.primary
        if primary is None:
            raise NotFound(f"vehicle {vin[:64]!r} has no primary ECU")
        keys = vehicle.keys
        if pre is not None and pre.primary == primary and pre.keys == keys:
            body, reports = pre.body, pre.reports  # checked against these very keys
        else:
            if len(self._ecu_keys) >= self.config.cache_vehicles:
                self._ecu_keys.clear()
            self._ecu_keys[vin] = (primary, keys)
            body, reports = self._check_signed(vin, manifest, primary, keys)
        skew = timedelta(seconds=self.config.report_skew_seconds)
        horizon = replay_horizon(self.config, now)
        for serial, report in reports.items():
            ecu = vehicle.ecus[serial]
            last = ecu.last_report_time
            check_report_freshness(
                report,
                _seen(vehicle.seen, ecu, report),
                now,
                skew,
                earliest=earliest,
                horizon=horizon,
                last_time=None if last is None else datetime.fromtimestamp(last, UTC),
            )
        accepted = _accepted(vin, vehicle, body, reports, raw, encoding, now)
        check_storable(vin, accepted.body.attack, accepted.encoding, accepted.rows())
        return lambda conn: self._record(conn, accepted)

    @staticmethod
    def _read_vehicle(conn: Connection, vin: str, nonces: dict[str, str]) -> _Vehicle:
        """The vehicle, its ECUs and bundle in flight, and which of ``nonces`` (by ECU
        serial) were stored before: one query."""
        params: dict[str, Any] = {"vin": vin, "in_flight": IN_FLIGHT}
        for i, (serial, nonce) in enumerate(nonces.items()):
            params[f"s{i}"] = serial
            params[f"n{i}"] = nonce
        cur = conn.connection.cursor()
        try:
            cur.execute(_vehicle_ecus_sql(len(nonces), conn.dialect.name), params)
            rows = cur.fetchall()
        finally:
            cur.close()
        if not rows:
            raise NotFound(f"unknown vehicle {vin[:64]!r}")
        return _Vehicle(
            id=int(rows[0][0]),
            attack=rows[0][1],
            in_flight=rows[0][2],
            ecus={r[4]: _Ecu(*r[3:11]) for r in rows if r[3] is not None},
            seen={(int(r[3]), nonces[r[4]]) for r in rows if r[11] is not None},
        )

    # --- the write --------------------------------------------------------------------------

    def _record(self, conn: Connection, m: _Accepted) -> dict[str, Any]:
        """Store an accepted manifest in the caller's transaction: the manifest, the
        vehicle's time, every nonce (one statement), every ECU's installed image and
        counter (one executemany), the attacks reported; then advance the bundle in flight
        (read with the ECUs).

        Every indicator the manifest carries is answered in ``attacks``, but an attack row
        is stored only where an indicator first appears: when it differs from the one its
        source (that ECU's report, or the Primary's manifest-level indicator) carried in
        the previous accepted manifest. A Secondary repeats its last indicator until
        something succeeds; that is one attack, not one a cycle."""
        dialect = conn.dialect.name
        v, t = m.vehicle, epoch(m.now)
        absent = m.absent
        cur = conn.connection.cursor()
        try:
            cur.execute(
                _sql(_INSERT_MANIFEST, dialect),
                {"vid": v.id, "t": t, "enc": m.encoding, "raw": m.raw},
            )
            inserted = cur.fetchone()
            if inserted is None:
                raise RuntimeError("the database returned no id for the stored manifest")
            mid = int(inserted[0])
            cur.execute(
                _sql(_MANIFEST_SEEN, dialect), {"vid": v.id, "t": t, "attack": m.body.attack}
            )
            if len(m.nonce_params) > 1:
                n = len(m.nonce_params) // 2
                cur.execute(_insert_nonces_sql(n, dialect), m.nonce_params)
            cur.executemany(_sql(_ECU_REPORTED, dialect), m.ecu_rows)
            back = [
                {"id": v.ecus[s].id} for s in m.reports if v.ecus[s].unreachable_since is not None
            ]
            if back:
                cur.executemany(_sql(_ECU_BACK, dialect), back)
            if absent:
                cur.executemany(_sql(_ECU_UNREACHABLE, dialect), m.absence_rows)
        finally:
            cur.close()
        if m.attack_rows:
            conn.execute(
                inv.attacks.insert(),
                [
                    {**a, "vehicle_id": v.id, "manifest_id": mid, "reported_at": t}
                    for a in m.attack_rows
                ],
            )
        bundle = None
        if v.in_flight is not None:
            serials = {e.id: s for s, e in v.ecus.items()}
            bundle = self.bundles.advance(
                conn, int(v.in_flight), v.id, m.vin, serials, m.reports, m.now, absent
            )
        return {
            "accepted": True,
            "manifest": mid,
            "attacks": m.attacks,
            "unreachable": sorted(absent),
            "bundle": bundle,
        }


def _accepted(
    vin: str,
    vehicle: _Vehicle,
    body: VehicleVersionManifest,
    reports: dict[str, EcuVersionReport],
    raw: bytes,
    encoding: str,
    now: datetime,
) -> _Accepted:
    """A checked manifest with the parameters of every statement its write runs."""
    t = epoch(now)
    nonce_params, ecu_rows = _report_rows(vehicle, reports, t)
    absent = _absences(vehicle, body, t)
    attacks, attack_rows = _attacks(vehicle, body, reports)
    return _Accepted(
        vin,
        vehicle,
        body,
        reports,
        raw,
        encoding,
        now,
        nonce_params,
        ecu_rows,
        absent,
        _absence_rows(vehicle, absent, t),
        attacks,
        attack_rows,
    )


def _seen(
    seen: set[tuple[int, str]], ecu: _Ecu, report: EcuVersionReport
) -> set[bytes] | int | None:
    """What :func:`check_report_freshness` compares with: this nonce if it was seen
    (as the vehicle query found it), or the ECU's last counter."""
    if report.nonce is not None:
        return {report.nonce} if (ecu.id, report.nonce.hex()) in seen else set()
    return None if ecu.last_counter is None else int(ecu.last_counter)


def _report_rows(
    v: _Vehicle, reports: dict[str, EcuVersionReport], t: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The parameters of the nonce INSERT (``t``, then ``e0``/``n0`` … per nonce) and of
    each ECU's :data:`_ECU_REPORTED` update."""
    nonce_params: dict[str, Any] = {"t": t}
    ecu_rows: list[dict[str, Any]] = []
    for serial, r in reports.items():
        ecu = v.ecus[serial]
        ecu_rows.append(
            {
                "id": ecu.id,
                "path": r.installed.filename,
                "length": r.installed.length,
                "hashes": _HASHES_JSON(r.installed.hashes),
                "time": epoch(r.latest_time),
                "attack": r.attack,
                # a nonce report leaves the ECU's counter as it is (COALESCE)
                "counter": None if r.nonce is not None else r.counter,
                "rc": r.release_counter,
            }
        )
        if r.nonce is not None:
            i = len(nonce_params) // 2
            nonce_params[f"e{i}"], nonce_params[f"n{i}"] = ecu.id, r.nonce.hex()
    return nonce_params, ecu_rows


def _absences(v: _Vehicle, body: VehicleVersionManifest, t: int) -> dict[str, Absence]:
    """The ECUs the manifest names unreachable (checked: registered, not reported), each
    unreachable since the first manifest of its streak (this one, ``t``, if it is the
    first)."""
    out: dict[str, Absence] = {}
    for u in body.unreachable:
        since = v.ecus[u.ecu_id].unreachable_since
        seen = None if u.last_seen is None else epoch(u.last_seen)
        out[u.ecu_id] = Absence(t if since is None else int(since), u.reason, seen)
    return out


def _absence_rows(v: _Vehicle, absent: dict[str, Absence], t: int) -> list[dict[str, Any]]:
    """The parameters of each unreachable ECU's :data:`_ECU_UNREACHABLE` update."""
    return [
        {"id": v.ecus[s].id, "t": t, "reason": a.reason, "seen": a.last_seen}
        for s, a in absent.items()
    ]


def _attacks(
    v: _Vehicle, body: VehicleVersionManifest, reports: dict[str, EcuVersionReport]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Every indicator the manifest carries (the answer's ``attacks``), and the attack
    rows to store: those that differ from their source's previous indicator."""
    attacks: list[str] = []
    rows: list[dict[str, Any]] = []
    if body.attack:
        attacks.append(body.attack)
        if body.attack != v.attack:
            rows.append({"ecu_id": v.ecus[body.primary_id].id, "attack": body.attack})
    for serial, r in reports.items():
        if r.attack:
            attacks.append(f"{serial}: {r.attack}")
            if r.attack != v.ecus[serial].last_attack:
                rows.append({"ecu_id": v.ecus[serial].id, "attack": r.attack})
    return attacks, rows


__all__ = ["ManifestIntake"]
