"""``uptane-flash install --bundle FILE``: one ECU on the bench flashed from an offline
update bundle (:mod:`storage.bundle`), the same file a vehicle's Primary imports.

The bench tool reads, for the bundle's vehicle (``--vin``, or its only one), the files the
ECU would get from its Primary, in the codec the ECU reads: for partial verification every
Director root version and the Director's targets; for full verification both
repositories' files, the Director's targets last. The image is the one those targets name
for this ECU. Nothing is trusted because it is in the bundle: the ECU verifies it all.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from hardware.bench_files import ImageSource, MetadataFile, _parse_name, assigned_entry
from hardware.messages import HelloInfo
from storage.bundle import Bundle, find_bundles
from uptane.errors import TargetNotFound, VehicleMismatch
from uptane.limits import PRIMARY


def _pick(where: Path, vin: str | None) -> tuple[Bundle, str]:
    """The bundle at ``where`` for ``vin`` (or the only vehicle of the only bundle)."""
    found = [Bundle(p) for p in find_bundles(where)]
    for b in found:
        vins = b.vins
        if (vin is None and len(found) == 1 and len(vins) == 1) or vin in vins:
            return b, vin or vins[0]
    every = sorted({v for b in found for v in b.vins})
    for b in found:
        b.close()
    if vin is None:
        raise ValueError(
            f"{where} holds bundles for {', '.join(every) or 'no vehicle'}: give --vin"
        )
    raise VehicleMismatch(f"no offline bundle for {vin} at {where} (bundles for: {every})")


def _repository(
    b: Bundle, prefix: str, repository: str, encoding: str, full: bool
) -> list[MetadataFile]:
    """A repository's files in the bundle, in the order a Secondary applies them: root
    versions ascending, then (full) timestamp, snapshot and delegated roles, targets."""
    files: list[tuple[tuple[int, int, str], MetadataFile]] = []
    for name in b.contents.files:
        if not name.startswith(prefix) or "/" in name[len(prefix) :]:
            continue
        parsed = _parse_name(name[len(prefix) :])
        if parsed is None or parsed[2] != encoding:
            continue
        version, role, enc = parsed
        if not full and role not in ("root", "targets"):
            continue
        data = b.read(name, PRIMARY.bytes_for_role("targets"))
        files.append((_rank(role, version), MetadataFile(repository, role, enc, data)))
    return [f for _, f in sorted(files, key=lambda kf: kf[0])]


def _rank(role: str, version: int) -> tuple[int, int, str]:
    """Root versions ascending, then timestamp, snapshot, delegated roles, targets last."""
    order = {"root": 0, "timestamp": 1, "snapshot": 2, "targets": 4}
    return (order.get(role, 3), version, role)


def bundle_files(
    where: Path, vin: str | None, hello: HelloInfo
) -> tuple[list[MetadataFile], ImageSource]:
    """What to send the ECU ``hello`` describes, from the bundle at ``where``."""
    b, vin = _pick(where, vin)
    encoding = hello.codecs[0] if hello.codecs else "der"
    full = hello.mode == "full"
    director = _repository(b, f"vehicles/{vin}/director/", "director", encoding, full)
    if full:
        image = _repository(b, "image/metadata/", "image", encoding, True)
        files = image + director
    else:
        files = director
    if not any(f.role == "targets" for f in director):
        raise ValueError(f"the bundle holds no Director targets for {vin} in {encoding}")
    entry = assigned_entry(files, hello.ecu_serial)
    if entry is None:
        raise TargetNotFound(
            f"the bundle's Director targets for {vin} name no image for ECU {hello.ecu_serial}"
        )
    dirname, sep, base = entry.path.rpartition("/")
    names = [quote(entry.path, safe="/")]
    names += [quote(f"{dirname}{sep}{h}.{base}", safe="/") for h in entry.hashes.values()]
    member = next((f"image/targets/{n}" for n in names if b.has(f"image/targets/{n}")), None)
    if member is None:
        raise ValueError(f"the bundle holds no image {entry.path!r}")
    source = ImageSource(entry.path, b.entry(member).length, lambda: b.stream(member))
    return files, source


__all__ = ["bundle_files"]
