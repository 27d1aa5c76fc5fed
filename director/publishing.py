"""Per-vehicle Director metadata (§5.3.2): the vehicle's targets, snapshot and timestamp,
signed inside the transaction that changed them, and served from memory.

On the Director's data path this is the step from a bundle (:mod:`director.bundles`) to
the vehicle: :meth:`Publisher.publish` signs the next versions with
:class:`uptane.repository.RepositoryBuilder`, continuing from the stored ones, in the
caller's transaction, so versions only grow and nothing half-written is visible. Signed
bytes are cached in memory per VIN: an unchanged poll costs at most one indexed lookup,
and a fresh hit none (:meth:`Publisher.cached_file`). A cache miss of a timestamp poll reads
only the vehicle's timestamp, for many vehicles in one statement
(:meth:`Publisher.poll_timestamps`, batched by :class:`director.serving.PollLookups`);
docs/scale.md measures it.

The Director root (``DIR/root/N.root.EXT``, signed offline) and the online keys are read
here; :mod:`director.keyrotation` changes them and asks :meth:`Publisher.reload_keys` to
re-sign every vehicle.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director import inventory as inv
from director.common import VIN_RE, epoch
from director.config import Config
from keystore import KeySource, authorized
from uptane.codec import for_filename
from uptane.errors import MalformedInput
from uptane.keys import Signer
from uptane.limits import Limits
from uptane.metadata import ENCODINGS, JSON, Root, TargetFile, Targets, decode
from uptane.repository import RepositoryBuilder, metadata_filename

#: the roles the Director signs per vehicle, with its online keys
ONLINE_ROLES = ("targets", "snapshot", "timestamp")


@dataclass
class _Cached:
    """One vehicle's signed files as served, by file name: all of them (``full``), or only
    its timestamp in one encoding (a poll's lookup)."""

    fetched: float
    files: dict[str, bytes]
    timestamp_expires: int
    full: bool = True


def column(role: str, encoding: str) -> str:
    """The ``vehicle_metadata`` column of ``role`` in ``encoding`` (``targets_compact_der``)."""
    return f"{role}_{encoding.replace('-', '_')}"


def _encoding_of(name: str) -> str | None:
    """The codec name a metadata file name's suffix says (``.cder``: compact-der), or None."""
    try:
        return for_filename(name).name
    except MalformedInput:
        return None


def load_root(directory: Path, encodings: tuple[str, ...]) -> dict[int, dict[str, bytes]]:
    """Every Director root version in ``directory/root``: version -> encoding -> bytes
    (files named with the codec's suffix: ``N.root.json``, ``.der``, ``.cder``)."""
    out: dict[int, dict[str, bytes]] = {}
    for p in (directory / "root").glob("*.root.*"):
        v = p.name.split(".", 1)[0]
        enc = _encoding_of(p.name)
        if v.isdigit() and enc in encodings:
            out.setdefault(int(v), {})[enc] = p.read_bytes()
    if not out:
        raise FileNotFoundError(f"no Director root in {directory / 'root'}")
    return out


def metadata_row(b: RepositoryBuilder, encodings: tuple[str, ...], now: datetime) -> dict[str, Any]:
    """The ``vehicle_metadata`` columns of what ``b`` signed, but the vehicle's id: the
    versions, expiries, and the signed files of ``encodings`` (the other encodings'
    columns empty: signed when first served, :meth:`Publisher.incomplete`)."""
    values: dict[str, Any] = {
        "targets_version": b.targets.version,
        "snapshot_version": b.snapshot.version,
        "timestamp_version": b.timestamp.version,
        "snapshot_expires": epoch(b.snapshot.expires),
        "timestamp_expires": epoch(b.timestamp.expires),
        "updated_at": epoch(now),
    }
    for enc in ENCODINGS:
        for role in ONLINE_ROLES:
            values[column(role, enc)] = b.files[enc][role] if enc in encodings else None
    return values


class Publisher:
    """Signs and serves every vehicle's Director metadata."""

    def __init__(
        self,
        directory: Path,
        config: Config,
        engine: Engine,
        keys: KeySource,
        *,
        clock: Callable[[], datetime],
        limits: Limits,
        encodings: tuple[str, ...],
    ) -> None:
        self.dir = directory
        self.config = config
        self.engine = engine
        #: the same database for single reads: no transaction, no lock (inv.reader)
        self.reader = inv.reader(engine)
        self.keys = keys
        self.clock = clock
        self.limits = limits
        self.encodings = encodings
        self.root_files = load_root(directory, encodings)
        #: the poll statement's SQL text and parameter names, by encoding and number of VINs
        self._poll_sql: dict[tuple[str, int], tuple[str, tuple[str, ...] | None]] = {}
        self._root: tuple[int, dict[int, dict[str, bytes]], Root] | None = None
        #: signed bytes per VIN, least recently used first, at most ``cache_vehicles``
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_lock = threading.Lock()
        #: bumped by every invalidation: a cache fill that raced one is not kept
        self._generation = 0
        #: called in the transaction of every change of a vehicle's metadata, to tell the
        #: other nodes at commit (director.cluster)
        self.on_change: Callable[[Connection, str], None] | None = None

    # --- keys and root ----------------------------------------------------------------------

    def root(self) -> Root:
        """The current Director root (decoded once per version: every signing asks)."""
        version = max(self.root_files)
        cached = self._root
        if cached is None or cached[0] != version or cached[1] is not self.root_files:
            md = decode(self.root_files[version][JSON], self.limits, role_type="root")
            assert isinstance(md.signed, Root)
            cached = self._root = (version, self.root_files, md.signed)
        return cached[2]

    def signers(self) -> dict[str, list[Signer]]:
        """The online keys the current root lists for each role (a key made for a
        rotation signs only once a root naming it is published)."""
        root = self.root()
        return {r: authorized(self.keys, r, root.roles[r].keyids) for r in ONLINE_ROLES}

    def margin(self, role: str) -> timedelta:
        """How long before expiry ``role`` is re-signed: half its lifetime."""
        return self.config.expiry[role] / 2

    def reload_keys(self, *, force: bool = False) -> bool:
        """Pick up a root or key rotation made by another process; when one happened, every
        vehicle's metadata is re-signed with the current keys."""
        latest = max(
            (int(p.name.split(".", 1)[0]) for p in (self.dir / "root").glob("*.root.json")),
            default=0,
        )
        if not force and latest == max(self.root_files):
            return False
        self.root_files = load_root(self.dir, self.encodings)
        forget = getattr(self.keys, "forget", None)
        if callable(forget):
            forget()  # another process may have made or retired keys
        with self._cache_lock:  # bytes another process re-signed are in the database
            self._cache.clear()
        now = self.clock()
        with self.reader.connect() as conn:  # one read: no write lock (SQLite)
            rows = conn.execute(
                sa.select(inv.vehicle_metadata.c.vin, inv.vehicle_metadata.c.vehicle_id)
            ).all()
        for vin, vid in rows:
            with self.engine.begin() as conn:
                self.publish(conn, vid, vin, now, resign_all=True)
        return True

    # --- signing ----------------------------------------------------------------------------

    def publish(
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
        Versions continue from the stored ones. Returns the targets version."""
        vm = inv.vehicle_metadata
        row = conn.execute(sa.select(vm).where(vm.c.vin == vin).with_for_update()).first()
        b = self._builder(vin, now)
        if row is not None:
            self._restore(b, row, now, resign_targets=new_targets is None, force=resign_all)
        if new_targets is not None and (row is not None or new_targets):
            b.targets.targets = {tf.path: tf for tf in new_targets}
            b.mark("targets")
        if row is not None or new_targets:
            b.publish(now)  # a new vehicle with no images keeps the builder's version 1
        values = self._row_values(b, vid, now)
        if row is None:
            conn.execute(vm.insert().values(vin=vin, **values))
        else:
            conn.execute(vm.update().where(vm.c.vin == vin).values(**values))
        self.invalidate(vin)
        if self.on_change is not None:
            self.on_change(conn, vin)
        return b.targets.version

    def first_row(self, vid: int, vin: str, now: datetime) -> dict[str, Any]:
        """The ``vehicle_metadata`` row of a vehicle just registered (no images), signed
        now: what :meth:`publish` inserts for it, for callers that insert many rows at
        once (bulk registration)."""
        return {"vin": vin, **self._row_values(self._builder(vin, now), vid, now)}

    def _builder(self, vin: str, now: datetime) -> RepositoryBuilder:
        """A builder for ``vin``'s metadata with the current keys and root."""
        root = self.root()
        return RepositoryBuilder(
            "director",
            self.signers(),
            now,
            keys={"root": [root.keys[k] for k in root.roles["root"].keyids]},
            expiry=self.config.expiry,
            vehicle_id=vin,
            encodings=self.encodings,
        )

    def _restore(
        self, b: RepositoryBuilder, row: Any, now: datetime, *, resign_targets: bool, force: bool
    ) -> None:
        """Load the stored versions and bytes into ``b``; mark what nears expiry (targets
        only when ``resign_targets``, and then always when ``force``)."""
        stored = decode(row.targets_json, self.limits, role_type="targets").signed
        assert isinstance(stored, Targets)
        b.targets.targets = stored.targets
        b.targets.expires = stored.expires
        b.targets.version = row.targets_version
        b.snapshot.version = row.snapshot_version
        b.timestamp.version = row.timestamp_version
        for enc in self.encodings:
            b.files[enc]["targets"] = getattr(row, column("targets", enc))
            b.files[enc]["snapshot"] = getattr(row, column("snapshot", enc))
        # a row signed before an encoding was added (migration 0007: compact-der) is signed
        # again in every encoding
        incomplete = self.incomplete(row)
        if resign_targets and (
            force or incomplete or stored.expires - now <= self.margin("targets")
        ):
            b.mark("targets")
        snapshot_expires = datetime.fromtimestamp(row.snapshot_expires, UTC)
        if incomplete or snapshot_expires - now <= self.margin("snapshot"):
            b.mark("snapshot")

    def incomplete(self, row: Any) -> bool:
        """Whether a ``vehicle_metadata`` row lacks a role in one of the encodings."""
        return any(
            getattr(row, column(role, enc)) is None
            for enc in self.encodings
            for role in ONLINE_ROLES
        )

    def _row_values(self, b: RepositoryBuilder, vid: int, now: datetime) -> dict[str, Any]:
        """The ``vehicle_metadata`` row of what ``b`` signed."""
        return {"vehicle_id": vid, **metadata_row(b, self.encodings, now)}

    def refresh_expiring(self) -> int:
        """Re-sign the metadata of every vehicle whose timestamp nears expiry."""
        now = self.clock()
        vm = inv.vehicle_metadata
        with self.reader.connect() as conn:  # one read: no write lock (SQLite)
            due = conn.execute(
                sa.select(vm.c.vin, vm.c.vehicle_id).where(vm.c.timestamp_expires <= self._due(now))
            ).all()
        for vin, vid in due:
            with self.engine.begin() as conn:
                self.publish(conn, vid, vin, now)
        return len(due)

    def _due(self, now: datetime) -> int:
        """A timestamp expiring at or before this (epoch seconds) is re-signed."""
        return epoch(now) + int(self.margin("timestamp").total_seconds())

    # --- serving ----------------------------------------------------------------------------

    def invalidate(self, vin: str | None = None) -> None:
        """Drop ``vin``'s signed bytes from memory (every vehicle's when None)."""
        with self._cache_lock:
            self._generation += 1
            if vin is None:
                self._cache.clear()
            else:
                self._cache.pop(vin, None)

    def cached_file(self, vin: str, name: str) -> bytes | None:
        """What :meth:`metadata_file` answers, when the answer is a fresh cache hit; None
        otherwise (ask :meth:`metadata_file`). Never touches the database or a key, so the
        HTTP service may call it on its event loop."""
        c = self._fresh(vin)
        if c is None:
            return None
        is_root, root = self._root_file(name)
        return root if is_root else c.files.get(name)

    def metadata_file(self, vin: str, name: str) -> bytes | None:
        """A per-vehicle metadata file by name (``N.root.json``, ``timestamp.der``, ...);
        root files too only for a registered vehicle."""
        if not VIN_RE.match(vin):
            return None
        is_root, root = self._root_file(name)
        if is_root and root is None:
            return None  # a root version there is none of (a client probing N+1): no lookup
        c = self._cached(vin, None if is_root else name)
        if c is None:
            return None
        return root if is_root else c.files.get(name)

    def _root_file(self, name: str) -> tuple[bool, bytes | None]:
        """Whether ``name`` is a root file (``N.root.EXT``, or ``root.EXT`` for the newest),
        and its bytes if there is that version in that encoding."""
        parts = name.split(".")
        if len(parts) == 3 and parts[1] == "root" and parts[0].isdigit():
            enc = _encoding_of(name)
            return True, self.root_files.get(int(parts[0]), {}).get(enc or "")
        if len(parts) == 2 and parts[0] == "root":
            enc = _encoding_of(name)
            return True, self.root_files[max(self.root_files)].get(enc or "")
        return False, None

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
        return c if c.timestamp_expires > self._due(self.clock()) else None

    def _keep(self, entries: dict[str, _Cached], generation: int) -> None:
        """Cache ``entries`` unless a change landed since ``generation`` was read (the
        lookup may have raced it); the least recently used go beyond ``cache_vehicles``."""
        with self._cache_lock:
            if generation == self._generation:
                for vin, c in entries.items():
                    self._cache[vin] = c
                    self._cache.move_to_end(vin)
            while len(self._cache) > self.config.cache_vehicles:
                self._cache.popitem(last=False)

    def _cached(self, vin: str, name: str | None = None) -> _Cached | None:
        """The vehicle's signed files (all of them, or at least ``name``): from memory, or
        one indexed lookup; re-signs the timestamp (and what else nears expiry) first when
        needed."""
        c = self._fresh(vin)
        if c is not None and (c.full or name in c.files):
            return c
        mono = time.monotonic()
        generation = self._generation
        now = self.clock()
        vm = inv.vehicle_metadata
        with self.reader.connect() as conn:
            row = conn.execute(sa.select(vm).where(vm.c.vin == vin)).first()
        if row is None:
            return None
        if row.timestamp_expires <= self._due(now) or self.incomplete(row):
            with self.engine.begin() as conn:
                fresh = conn.execute(sa.select(vm).where(vm.c.vin == vin).with_for_update()).first()
                if fresh is not None and (
                    fresh.timestamp_expires <= self._due(now) or self.incomplete(fresh)
                ):
                    self.publish(conn, row.vehicle_id, vin, now)
            with self.reader.connect() as conn:
                row = conn.execute(sa.select(vm).where(vm.c.vin == vin)).first()
            assert row is not None
        c = self._entry(row, mono)
        self._keep({vin: c}, generation)
        return c

    def _entry(self, row: Any, fetched: float) -> _Cached:
        """The cache entry of a ``vehicle_metadata`` row."""
        files: dict[str, bytes] = {}
        for enc in self.encodings:
            files[metadata_filename("timestamp", None, enc)] = getattr(
                row, column("timestamp", enc)
            )
            for role in ("snapshot", "targets"):
                data = getattr(row, column(role, enc))
                files[metadata_filename(role, getattr(row, f"{role}_version"), enc)] = data
                files[metadata_filename(role, None, enc)] = data
        return _Cached(fetched, files, row.timestamp_expires)

    # --- polls at fleet scale ---------------------------------------------------------------

    def poll_statement(self, encoding: str, vins: int) -> sa.Select[Any]:
        """The statement of a poll's lookup for ``vins`` VINs (bound as ``v0``, ``v1``...):
        their timestamps in ``encoding``, the timestamp's expiry, and whether the row is
        signed in every encoding; one search of the primary key per VIN."""
        vm = inv.vehicle_metadata
        complete = sa.and_(
            *(vm.c[column(r, e)].is_not(None) for e in self.encodings for r in ONLINE_ROLES)
        )
        return sa.select(
            vm.c.vin,
            vm.c.timestamp_expires,
            sa.case((complete, sa.literal_column("1")), else_=sa.literal_column("0")).label(
                "complete"
            ),
            vm.c[column("timestamp", encoding)],
        ).where(vm.c.vin.in_([sa.bindparam(f"v{i}") for i in range(vins)]))

    def _sql(self, encoding: str, vins: list[str]) -> tuple[str, Any]:
        """The SQL text of :meth:`poll_statement` (compiled once per encoding and number of
        VINs) and its parameters, run on the DBAPI cursor as the manifest path's are
        (director/manifests.py): SQLAlchemy's compiled-statement path cost 4 to 5 times the
        lookup itself (measured for 8 VINs: 212 µs against 56 µs as text on SQLite, 338 µs
        against 118 µs on PostgreSQL), and its execution of text still a third of it."""
        key = (encoding, len(vins))
        found = self._poll_sql.get(key)
        if found is None:
            compiled = self.poll_statement(*key).compile(dialect=self.engine.dialect)
            order = tuple(compiled.positiontup or ()) if compiled.positional else None
            found = self._poll_sql[key] = (str(compiled), order)
        sql, order = found
        named = {f"v{i}": v for i, v in enumerate(vins)}
        return sql, named if order is None else tuple(named[k] for k in order)

    def poll_timestamps(self, vins: list[str], encoding: str, conn: Connection) -> dict[str, bytes]:
        """Cache misses of timestamp polls: the timestamps in ``encoding`` of ``vins``
        (valid VINs, each once) read in one statement on ``conn`` (a :attr:`reader`
        connection) and cached; only them: a later request of the vehicle's snapshot or
        targets, or of another encoding, reads again. Returns, by VIN, the timestamp of
        the vehicles that may be served as stored; one unknown, whose timestamp nears
        expiry or whose row lacks an encoding is left out (:meth:`metadata_file` answers
        it, signing first). Never signs."""
        mono = time.monotonic()
        generation = self._generation
        due = self._due(self.clock())
        name = metadata_filename("timestamp", None, encoding)
        cur = conn.connection.cursor()
        try:
            cur.execute(*self._sql(encoding, vins))
            rows = cur.fetchall()
        finally:
            cur.close()
        entries = {
            r[0]: _Cached(mono, {name: bytes(r[3])}, r[1], full=False)
            for r in rows
            if r[2] and r[1] > due
        }
        self._keep(entries, generation)
        return {vin: c.files[name] for vin, c in entries.items()}


__all__ = ["ONLINE_ROLES", "Publisher", "column", "load_root", "metadata_row"]
