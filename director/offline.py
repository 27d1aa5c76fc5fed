"""Offline update bundles and carried manifests (issue 18): the workshop's side of the
Director.

:func:`build_bundle` makes one file (:mod:`storage.bundle`) that carries, for each VIN,
everything its Primary would have fetched online for the bundle in flight:

- the Director's metadata for that vehicle: every root version (the vehicle follows the
  chain from the root it trusts), and targets, snapshot and timestamp signed again now
  with lifetimes that cover the trip (``days``), as the vehicle's next versions (they are
  what the Director serves from now on too, so versions only grow);
- the Image repository's metadata (every root version, timestamp, snapshot, targets and
  delegated roles, in each encoding it publishes), checked against the pinned
  Image-repository root before it goes in;
- the images, each checked against the Image repository's entry (length and every hash).

It refuses a trip the Image repository's metadata does not last for (the vehicle would
refuse it as expired), and a vehicle with no bundle in flight (assign first). Each VIN's
bundle is recorded (:data:`offline_bundles`): when, until when, which Director bundle and
targets version, the file's SHA-256.

:func:`upload_manifest` takes a vehicle version manifest the Primary exported back to
the stick (``uptane-primary import-bundle --export``), or a bench laptop kept: it is
checked exactly like one posted by the vehicle (:meth:`director.manifests.ManifestIntake
.process`, §5.3.2.1) except that its reports may be older than the skew: down to
:data:`MAX_CARRIED_DAYS` ago, and never older than what the Director already holds from
that ECU. Its reports confirm (or fail) the bundle as online.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import sqlalchemy as sa

from director import inventory as inv
from director.common import Invalid, Unavailable, epoch, iso
from director.director import Director
from director.imageview import DirectorySource, HttpSource
from director.lifecycle import IN_FLIGHT
from director.publishing import ONLINE_ROLES, column
from director.repostate import available_encodings
from storage.bundle import Contents, write_bundle
from uptane.codec import sniff
from uptane.errors import ReplayAttack, UptaneError
from uptane.limits import Limits
from uptane.manifest import decode_vehicle_manifest
from uptane.metadata import JSON, Root, Snapshot, TargetFile, Targets, decode
from uptane.repository import metadata_filename
from uptane.trust import MetadataSource
from uptane.verify import ImageVerifier

#: how long after it was signed a carried manifest is still taken
MAX_CARRIED_DAYS = 30
#: the longest trip a bundle may be signed for
MAX_TRIP_DAYS = 90


@dataclass
class _Parts:
    """What goes into one bundle file: members (name, bytes or file) and, per VIN, what
    the manifest of contents says."""

    members: list[tuple[str, bytes | Path]] = field(default_factory=list)
    vehicles: dict[str, dict[str, Any]] = field(default_factory=dict)
    expires: list[tuple[datetime, str]] = field(default_factory=list)


def build_bundle(
    d: Director, vins: list[str], out: Path, *, days: float, now: datetime | None = None
) -> dict[str, Any]:
    """Write the offline bundle for ``vins`` to ``out`` (see the module doc); returns what
    was recorded. Raises :class:`~director.common.Invalid` (a vehicle with nothing in
    flight, a trip longer than the Image repository's metadata lasts) or NotFound."""
    if not vins or len(set(vins)) != len(vins):
        raise Invalid("give each VIN once")
    if not 0 < days <= MAX_TRIP_DAYS:
        raise Invalid(f"--days must be above 0 and at most {MAX_TRIP_DAYS}")
    now = now or d.clock()
    end = now + timedelta(days=days)
    parts = _Parts()
    with tempfile.TemporaryDirectory(prefix="uptane-bundle-") as tmp:
        view = _image_repository(d, parts)
        _check_lasts(parts, end, "the Image repository's")
        bundles = {vin: _in_flight(d, vin) for vin in vins}
        for vin in vins:
            targets = _director_files(d, vin, parts, now, days)
            _images(d, vin, targets, view, parts, Path(tmp))
        contents = Contents(iso(epoch(now)) or "", iso(epoch(min(parts.expires)[0])) or "", {})
        contents.vehicles = parts.vehicles
        written = write_bundle(out, contents, _unique(parts.members))
    digest = _sha256(out)
    rows = _record(d, bundles, parts, now, out, digest)
    return {
        "file": str(out),
        "sha256": digest,
        "expires": written.expires,
        "vehicles": rows,
        "files": len(written.files),
    }


def _unique(members: list[tuple[str, bytes | Path]]) -> list[tuple[str, bytes | Path]]:
    """Members by name once (an image two vehicles share goes in once)."""
    seen: dict[str, bytes | Path] = {}
    for name, src in members:
        seen.setdefault(name, src)
    return list(seen.items())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_lasts(parts: _Parts, end: datetime, whose: str) -> None:
    """Every metadata file so far must outlast the trip: the vehicle refuses an expired
    one (a freeze), so a bundle that expires on the way is refused here, with what to do."""
    soonest, name = min(parts.expires)
    if soonest < end:
        raise Invalid(
            f"{whose} {name} expires at {iso(epoch(soonest))}, before the trip ends at "
            f"{iso(epoch(end))}: sign it again with a longer lifetime (uptane-image-repo "
            "lifetimes DIR --set ROLE=DAYS, then sign), or choose a shorter trip (--days)"
        )


# --- the Director's metadata ------------------------------------------------------------------


def _in_flight(d: Director, vin: str) -> int:
    """The id of ``vin``'s bundle in flight (NotFound: no such vehicle; Invalid: none)."""
    with d.engine.connect() as conn:
        vid = d.fleet.vehicle_id(conn, vin)
        b = inv.bundles
        bid = conn.execute(
            sa.select(b.c.id).where(b.c.vehicle_id == vid, b.c.state == IN_FLIGHT)
        ).scalar()
    if bid is None:
        raise Invalid(
            f"{vin} has no bundle in flight: assign its images first (uptane-director assign)"
        )
    return int(bid)


@contextmanager
def _trip_lifetimes(d: Director, days: float) -> Iterator[None]:
    """The Director's expiry policy, for the signing inside, at least ``days`` for the
    roles it signs per vehicle (this process only; ``director.json`` is not changed)."""
    saved = dict(d.config.expiry_days)
    for role in ONLINE_ROLES:
        d.config.expiry_days[role] = max(saved.get(role, 0.0), days)
    try:
        yield
    finally:
        d.config.expiry_days.clear()
        d.config.expiry_days.update(saved)


def _director_files(d: Director, vin: str, parts: _Parts, now: datetime, days: float) -> Targets:
    """Sign ``vin``'s next targets, snapshot and timestamp for the trip, and add every
    Director file of the vehicle (all root versions too); returns the targets."""
    vm = inv.vehicle_metadata
    with d.engine.begin() as conn:
        vid = d.fleet.vehicle_id(conn, vin)
        with _trip_lifetimes(d, days):
            d.publisher.publish(conn, vid, vin, now, resign_all=True)
        row = conn.execute(sa.select(vm).where(vm.c.vin == vin)).one()
    d.publisher.invalidate(vin)
    base = f"vehicles/{vin}/director/"
    for version, by_enc in sorted(d.publisher.root_files.items()):
        for enc, data in sorted(by_enc.items()):
            parts.members.append((base + metadata_filename("root", version, enc), data))
    for enc in d.encodings:
        for role in ONLINE_ROLES:
            signed_bytes: bytes | None = getattr(row, column(role, enc), None)
            if signed_bytes is None:
                continue
            v: int | None = None if role == "timestamp" else getattr(row, f"{role}_version")
            parts.members.append((base + metadata_filename(role, v, enc), signed_bytes))
    targets = decode(row.targets_json, d.limits, role_type="targets").signed
    assert isinstance(targets, Targets)
    for role in ONLINE_ROLES:
        signed = decode(getattr(row, column(role, JSON)), d.limits, role_type=role).signed
        parts.expires.append((signed.expires, f"Director {role} of {vin}"))
    parts.vehicles[vin] = {
        "targets_version": int(row.targets_version),
        "timestamp_version": int(row.timestamp_version),
        "images": sorted(targets.targets),
    }
    return targets


# --- the Image repository ---------------------------------------------------------------------


def _source(location: str, encoding: str) -> MetadataSource:
    if location.startswith(("http://", "https://")):
        return HttpSource(location, encoding)
    return DirectorySource(Path(location), encoding)


def _image_repository(d: Director, parts: _Parts) -> Any:
    """Add the Image repository's metadata (verified against the pinned root first), in
    every encoding it publishes; returns the Director's view of it."""
    view = d.image_view
    try:
        view.refresh(force=True)
    except (httpx.HTTPError, OSError) as e:
        raise Unavailable(f"the Image repository cannot be read: {e}") from None
    trust = view.trust
    root = trust.root.signed
    assert isinstance(root, Root) and trust.snapshot is not None
    snapshot = trust.snapshot.signed
    assert isinstance(snapshot, Snapshot)
    consistent = root.consistent_snapshot
    roles = [(n.removesuffix(".json"), m.version) for n, m in snapshot.meta.items()]
    wanted: list[tuple[str, int | None]] = [("root", v) for v in range(1, root.version + 1)]
    wanted += [("timestamp", None), ("snapshot", snapshot.version if consistent else None)]
    wanted += [(r, v if consistent else None) for r, v in roles]
    cap = d.limits.bytes_for_role("targets")
    for enc in available_encodings():
        src = _source(d.config.image_repo, enc)
        for role, version in wanted:
            data = src.fetch_metadata(role, version, cap)
            if data is None:
                raise Unavailable(f"the Image repository serves no {role} v{version} in {enc}")
            name = metadata_filename(role, version, enc)
            parts.members.append((f"image/metadata/{name}", data))
            if enc == JSON and role != "root":
                md = decode(data, d.limits).signed
                parts.expires.append((md.expires, f"{role} (version {md.version})"))
    return view


def _images(d: Director, vin: str, targets: Targets, view: Any, parts: _Parts, tmp: Path) -> None:
    """Add every image ``vin``'s targets name, named as the Image repository serves it,
    each checked against the Image repository's entry (length and every hash)."""
    trust = view.trust
    consistent = trust.root.signed.consistent_snapshot
    for path, entry in sorted(targets.targets.items()):
        if entry.url:
            raise Invalid(
                f"{vin}: {path!r} is served from its own URL ({entry.url[:80]}); bundles "
                "carry images from the Image repository only"
            )
        hw = next(iter(entry.hardware_ids), "")
        image = d.bundles.image_entry(path, hw) if hw else entry
        name = _served_name(path, image, consistent)
        dest = tmp / hashlib.sha256(name.encode()).hexdigest()
        if not dest.exists():
            _fetch_image(d, name, image, dest)
        parts.members.append((f"image/targets/{name}", dest))


def _served_name(path: str, entry: TargetFile, consistent: bool) -> str:
    """The image's name under ``targets/`` as the Primary asks for it (percent-encoded;
    with consistent snapshots ``dir/HASH.name``: :func:`primary.sources.target_url`)."""
    dirname, sep, base = path.rpartition("/")
    if consistent:
        base = f"{next(iter(entry.hashes.values()))}.{base}"
    return quote(f"{dirname}{sep}{base}", safe="/")


def _fetch_image(d: Director, name: str, entry: TargetFile, dest: Path) -> None:
    """The image's bytes from the Image repository into ``dest``, verified."""
    verifier = ImageVerifier(entry, d.limits)
    location = d.config.image_repo
    try:
        with open(dest, "wb") as out:
            if location.startswith(("http://", "https://")):
                url = location.rstrip("/") + "/targets/" + name
                with httpx.stream("GET", url, timeout=30.0) as r:
                    r.raise_for_status()
                    for chunk in r.iter_bytes():
                        verifier.update(chunk)
                        out.write(chunk)
            else:
                root = Path(location)
                root = root.parent if root.name == "metadata" else root
                digest = entry.hashes.get("sha256", "")
                with open(root / "images" / digest.lower(), "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        verifier.update(chunk)
                        out.write(chunk)
        verifier.finish()
    except (httpx.HTTPError, OSError) as e:
        raise Unavailable(f"image {entry.path!r} cannot be read: {e}") from None


# --- the record ---------------------------------------------------------------------------


def _record(
    d: Director,
    bundles: dict[str, int],
    parts: _Parts,
    now: datetime,
    out: Path,
    digest: str,
) -> list[dict[str, Any]]:
    """One row per VIN: the vehicle's bundle, now also carried on a stick."""
    ob = inv.offline_bundles
    rows = []
    expires = epoch(min(parts.expires)[0])
    with d.engine.begin() as conn:
        for vin, bid in bundles.items():
            v = parts.vehicles[vin]
            row = {
                "vehicle_id": d.fleet.vehicle_id(conn, vin),
                "bundle_id": bid,
                "created_at": epoch(now),
                "expires_at": expires,
                "targets_version": v["targets_version"],
                "timestamp_version": v["timestamp_version"],
                "file_name": out.name[:255],
                "sha256": digest,
            }
            result = conn.execute(ob.insert().values(**row))
            assert result.inserted_primary_key is not None
            rows.append({"id": int(result.inserted_primary_key[0]), "vin": vin, **row})
    for r in rows:
        del r["vehicle_id"]
    return rows


def list_bundles(d: Director, vin: str | None = None) -> list[dict[str, Any]]:
    """The offline bundles made, newest first, each with its Director bundle's state."""
    ob, b, v = inv.offline_bundles, inv.bundles, inv.vehicles
    q = (
        sa.select(ob, v.c.vin, b.c.state.label("bundle_state"))
        .join(v, v.c.id == ob.c.vehicle_id)
        .join(b, b.c.id == ob.c.bundle_id)
        .order_by(ob.c.id.desc())
    )
    if vin is not None:
        q = q.where(v.c.vin == vin)
    with d.engine.connect() as conn:
        rows = conn.execute(q).all()
    return [
        {
            "id": r.id,
            "vin": r.vin,
            "bundle": r.bundle_id,
            "bundle_state": r.bundle_state,
            "created": iso(r.created_at),
            "expires": iso(r.expires_at),
            "targets_version": r.targets_version,
            "file": r.file_name,
            "sha256": r.sha256,
        }
        for r in rows
    ]


# --- manifests carried back ---------------------------------------------------------------


def upload_manifest(d: Director, data: bytes) -> dict[str, Any]:
    """Take a vehicle version manifest carried back from an offline vehicle (or kept by a
    bench laptop): checked as if the vehicle had posted it (§5.3.2.1), its reports allowed
    to be up to :data:`MAX_CARRIED_DAYS` old but never older than the last report the
    Director holds from that ECU (a stale stick cannot roll the inventory back)."""
    encoding = sniff(data).name
    limits = Limits.primary()
    try:
        vvm = decode_vehicle_manifest(data, limits, encoding)
    except UptaneError as e:
        raise Invalid(f"not a vehicle version manifest: {e}") from None
    vin = vvm.signed.vehicle_id
    now = d.clock()
    earliest = now - timedelta(days=MAX_CARRIED_DAYS)
    last = _last_reports(d, vin)
    for r in vvm.signed.reports:
        before = last.get(r.signed.ecu_id)
        if before is not None and epoch(r.signed.latest_time) < before:
            raise ReplayAttack(
                f"the report of ECU {r.signed.ecu_id[:64]!r} is older than the last one the "
                f"Director holds ({iso(before)}): a newer manifest was taken already"
            )
    return {"vin": vin, **d.manifests.process(vin, data, encoding, earliest=earliest)}


def _last_reports(d: Director, vin: str) -> dict[str, int]:
    e = inv.ecus
    with d.engine.connect() as conn:
        vid = d.fleet.vehicle_id(conn, vin)
        rows = conn.execute(
            sa.select(e.c.serial, e.c.last_report_time).where(e.c.vehicle_id == vid)
        ).all()
    return {r.serial: int(r.last_report_time) for r in rows if r.last_report_time is not None}


__all__ = ["MAX_CARRIED_DAYS", "build_bundle", "list_bundles", "upload_manifest"]
