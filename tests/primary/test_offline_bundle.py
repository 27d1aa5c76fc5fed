"""Offline update bundles (issue 18), in one process against the real Director and Image
repository: the Director builds a bundle for a vehicle, the vehicle's Primary imports it
with no network (every URL it asks for comes from the bundle), installs on its
Secondaries, exports its manifest, and the Director confirms the bundle from that upload.
Then the attacks: a tampered image, tampered metadata, another vehicle's bundle, an
expired bundle, an older bundle after a newer one, a bundle signed by keys the vehicle
does not trust. Each is refused with a named error, and nothing is installed."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cycle_support import VIN, backend_and_vehicle

from director.director import EcuSpec
from director.offline import build_bundle, list_bundles, upload_manifest
from primary.offline import OfflinePrimary, open_bundle
from storage.bundle import CONTENTS, Bundle, write_bundle
from uptane.errors import (
    BadHash,
    BadSignature,
    ExpiredMetadata,
    RollbackAttack,
    ThresholdNotMet,
    VehicleMismatch,
)
from uptane.keys import PrivateKey

BRAKES = "brakes/fw-2.bin"
TCU = "tcu/tcu-5.bin"


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def offline_cycle(car, where: Path, export: Path | None = None):
    """``uptane-primary import-bundle``: the bundle for this vehicle at ``where``, one
    cycle from it, the manifest exported to ``export``."""
    with open_bundle(where, VIN) as bundle:
        p = OfflinePrimary(
            car.config, bundle, export=export, time_source=car.time, say=car.lines.append
        )
        result = p.run_cycle()
        return result, p.exported


def test_a_bundle_installs_offline_and_the_carried_manifest_confirms_it(tmp_path, now):
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES), ("tcu-1", TCU)])
        stick = tmp_path / "stick"
        out = build_bundle(backend.director, [VIN], stick / "car.uptane.tar", days=0.5)
        assert [v["vin"] for v in out["vehicles"]] == [VIN]
        with Bundle(stick / "car.uptane.tar") as b:
            assert b.vins == [VIN]
            assert b.contents.vehicles[VIN]["images"] == [BRAKES, TCU]
        # the vehicle has no network: its configured servers are never asked
        requests = len(backend.director_proxy.requests) + len(backend.image_proxy.requests)
        result, exported = offline_cycle(car, stick, export=stick)
        assert result.error is None, (result.error, car.lines)
        assert result.installed == {"brk-1": BRAKES, "tcu-1": TCU}
        assert car.installed("brk-1") == BRAKES and car.installed("tcu-1") == TCU
        assert len(backend.director_proxy.requests) + len(backend.image_proxy.requests) == (
            requests
        )
        # the dealer uploads the manifest carried back: the Director confirms the bundle
        assert exported is not None and exported.parent == stick
        backend.clock.advance(timedelta(hours=2))  # uploaded later than the skew allows
        answer = upload_manifest(backend.director, exported.read_bytes())
        assert answer["bundle"]["state"] == "installed", answer
        [row] = list_bundles(backend.director, VIN)
        assert row["bundle_state"] == "installed" and row["sha256"] == out["sha256"]
        # the same manifest again is a replay
        with pytest.raises(Exception, match="nonce"):
            upload_manifest(backend.director, exported.read_bytes())


def _bundle(backend, tmp_path: Path, name: str = "car.uptane.tar", days: float = 0.5) -> Path:
    out = tmp_path / "stick" / name
    build_bundle(backend.director, [VIN], out, days=days)
    return out


def _rewrite(src: Path, dest: Path, change) -> Path:
    """A copy of a bundle with ``change(name, data) -> data`` applied to every member; the
    manifest of contents recomputed (an attacker controls the whole stick)."""
    with Bundle(src) as b:
        members = {n: b.read(n, 1 << 30) for n in b.contents.files}
        contents = b.contents
    members = {n: change(n, d) for n, d in members.items()}
    write_bundle(dest, contents, sorted(members.items()))
    return dest


def _unchanged(car) -> None:
    assert car.installed("brk-1") is None and car.installed("tcu-1") is None


def test_a_tampered_image_is_refused(tmp_path, now):
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        good = _bundle(backend, tmp_path)

        def flip(name: str, data: bytes) -> bytes:
            return data[:-1] + bytes([data[-1] ^ 1]) if name.startswith("image/targets/") else data

        bad = _rewrite(good, tmp_path / "bad" / "car.uptane.tar", flip)
        result, _ = offline_cycle(car, bad)
        assert isinstance(result.error, BadHash), result.error
        _unchanged(car)
        # a copy damaged on the stick (its manifest of contents not updated) is refused too
        raw = tmp_path / "raw"
        with tarfile.open(good) as t:
            t.extractall(raw, filter="data")
        image = next((raw / "image" / "targets").rglob("*.bin"))
        image.write_bytes(image.read_bytes()[:-1] + b"\x00")
        result, _ = offline_cycle(car, raw)
        assert isinstance(result.error, BadHash), result.error
        _unchanged(car)


def test_tampered_metadata_is_refused(tmp_path, now):
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        good = _bundle(backend, tmp_path)

        def lengthen(name: str, data: bytes) -> bytes:
            if name.startswith(f"vehicles/{VIN}/director/") and name.endswith("targets.json"):
                doc = json.loads(data)
                for t in doc["signed"]["targets"].values():
                    t["length"] += 1
                return json.dumps(doc).encode()
            return data

        bad = _rewrite(good, tmp_path / "bad" / "car.uptane.tar", lengthen)
        result, _ = offline_cycle(car, bad)
        assert isinstance(result.error, (BadSignature, ThresholdNotMet)), result.error
        _unchanged(car)


def test_another_vehicles_bundle_is_refused(tmp_path, now):
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        # a second vehicle at the same Director, with ECUs of the same names
        other = "VIN-PRIMARY-2"
        specs = [
            EcuSpec(s, hw, PrivateKey.generate().key, s == "gw-1")
            for s, hw in (("gw-1", "gw-v1"), ("brk-1", "brk-v1"), ("tcu-1", "tcu-v5"))
        ]
        backend.register(other, specs)
        backend.assign(other, [("brk-1", BRAKES)])
        theirs = tmp_path / "theirs.uptane.tar"
        build_bundle(backend.director, [other], theirs, days=0.5)
        with pytest.raises(VehicleMismatch, match=f"no offline bundle for {VIN}"):
            open_bundle(theirs, VIN)
        # relabelled for this VIN on the stick: their Director targets still name theirs
        with Bundle(theirs) as b:
            members = {
                n.replace(f"vehicles/{other}/", f"vehicles/{VIN}/"): b.read(n, 1 << 30)
                for n in b.contents.files
            }
            contents = b.contents
        contents.vehicles = {VIN: contents.vehicles[other]}
        relabelled = tmp_path / "relabelled" / "car.uptane.tar"
        write_bundle(relabelled, contents, sorted(members.items()))
        result, _ = offline_cycle(car, relabelled)
        assert isinstance(result.error, VehicleMismatch), result.error
        _unchanged(car)


def test_an_expired_bundle_is_refused(tmp_path, now):
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        good = _bundle(backend, tmp_path, days=0.5)
        car.time.set(now + timedelta(days=2))  # the stick reached the car too late
        result, _ = offline_cycle(car, good)
        assert isinstance(result.error, ExpiredMetadata), result.error
        _unchanged(car)


def test_an_older_bundle_after_a_newer_one_is_refused(tmp_path, now):
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        old = _bundle(backend, tmp_path, "old.uptane.tar")
        new = _bundle(backend, tmp_path / "n", "new.uptane.tar")
        result, _ = offline_cycle(car, new)
        assert result.error is None and car.installed("brk-1") == BRAKES, result.error
        result, _ = offline_cycle(car, old)
        assert isinstance(result.error, RollbackAttack), result.error
        assert car.installed("brk-1") == BRAKES


def test_a_bundle_signed_with_keys_the_vehicle_does_not_trust_is_refused(tmp_path, now):
    with backend_and_vehicle(tmp_path / "a", now) as (backend, car):
        with backend_and_vehicle(tmp_path / "b", now) as (stranger, _other):
            stranger.assign(VIN, [("brk-1", BRAKES)])  # the same VIN at another Director
            forged = _bundle(stranger, tmp_path / "s")
        result, _ = offline_cycle(car, forged)
        assert isinstance(result.error, (BadSignature, ThresholdNotMet)), result.error
        _unchanged(car)
        del backend


def test_the_bundle_file_is_checked_before_anything_is_read(tmp_path, now):
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        good = _bundle(backend, tmp_path)
        # a member the manifest of contents does not list
        extra = tmp_path / "extra.uptane.tar"
        shutil.copy(good, extra)
        with tarfile.open(extra, "a") as t:
            info = tarfile.TarInfo("image/targets/evil.bin")
            info.size = 3
            t.addfile(info, io.BytesIO(b"bad"))
        with pytest.raises(Exception, match="not listed"):
            Bundle(extra)
        # a link instead of a file
        link = tmp_path / "link.uptane.tar"
        with tarfile.open(link, "w") as t:
            head = b'{"format": "uptane-offline-bundle"}'
            info = tarfile.TarInfo(CONTENTS)
            info.size = len(head)
            t.addfile(info, io.BytesIO(head))
            sym = tarfile.TarInfo("image/targets/x.bin")
            sym.type = tarfile.SYMTYPE
            sym.linkname = "/etc/passwd"
            t.addfile(sym)
        with pytest.raises(Exception, match="not a file"):
            Bundle(link)
        _unchanged(car)
