"""The key-compromise table (issue 7): each key stolen alone, and what the attacker can and
cannot do against a vehicle that runs full verification (§5.4.4.2).

The world is two real repositories built with RepositoryBuilder: an Image repository (an
engine line on the top-level targets, brake images delegated to a supplier restricted to
``brake/*`` and hardware ``brake-v2``) and a Director for one vehicle (root threshold 2 of
2 keys). The attacker is a man in the middle (``InMemorySource.overrides``) holding the
stolen key: it can serve anything it can sign. Each test shows what gets through (the
outcome in ``docs/security.md``) and that what must not, does not: the named error and
nothing new approved for installation.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from trust_support import NOW, VIN, Repo, director_entry, make_repo

from uptane.errors import (
    BadHardwareId,
    ExpiredMetadata,
    MixAndMatchAttack,
    RollbackAttack,
    TargetMismatch,
    TargetNotFound,
    ThresholdNotMet,
)
from uptane.keys import PrivateKey
from uptane.limits import PRIMARY
from uptane.metadata import JSON, DelegatedRole, MapFile, TargetFile, Targets
from uptane.repository import metadata_filename
from uptane.trust import RepositoryTrust
from uptane.verify import FullVerificationResult, VehicleContext, full_verification

ECUS = {"ecu-primary": "gateway-v1", "ecu-brake": "brake-v2", "ecu-engine": "engine-v1"}
EVIL = b"malware " * 64


def engine(version: int) -> tuple[str, bytes]:
    return f"engine/fw-{version}.bin", f"engine firmware v{version} ".encode() * 40


def brake(version: int) -> tuple[str, bytes]:
    return f"brake/fw-{version}.bin", f"brake firmware v{version} ".encode() * 40


class Scene:
    """The two repositories, the vehicle's trusted state after a first genuine cycle (brake
    v5, engine v3 installed), and the attacker's tools."""

    def __init__(self) -> None:
        self.image: Repo = make_repo("image")
        for v in (2, 3, 4):
            path, data = engine(v)
            self.image.builder.add_target(
                TargetFile.from_data(path, data, hardware_ids=["engine-v1"], release_counter=v)
            )
        self.supplier = PrivateKey.generate()
        self.image.builder.delegate(
            "targets",
            DelegatedRole(
                "acme-brakes", [], 1, terminating=True, paths=["brake/*"], hardware_ids=["brake-v2"]
            ),
            [self.supplier],
        )
        self.add_image(*brake(5), "brake-v2", 5, role="acme-brakes")
        self.director: Repo = make_repo(
            "director", vehicle_id=VIN, keys_per_role=2, thresholds={"root": 2}
        )
        self.assign(
            {"ecu-brake": (*brake(5), "brake-v2", 5), "ecu-engine": (*engine(3), "engine-v1", 3)}
        )
        self.vehicle = VehicleContext(VIN, "ecu-primary", dict(ECUS))
        self.director_trust = RepositoryTrust(
            "director",
            self.director.builder.trusted_root(JSON),
            PRIMARY,
            vehicle_id=VIN,
            ecu_ids=list(ECUS),
        )
        self.image_trust = self.image.trust()
        first = self.run()
        assert self.approved(first) == {
            "ecu-brake": "brake/fw-5.bin",
            "ecu-engine": "engine/fw-3.bin",
        }
        self.install(first)

    # --- the genuine repositories ----------------------------------------------------------

    def add_image(
        self,
        path: str,
        data: bytes,
        hw: str,
        rc: int,
        *,
        role: str = "targets",
        now: datetime = NOW,
    ) -> None:
        self.image.builder.add_target(
            TargetFile.from_data(path, data, hardware_ids=[hw], release_counter=rc), role
        )
        self.image.publish(now)

    def assign(self, entries: dict[str, tuple[str, bytes, str, int]], now: datetime = NOW) -> None:
        self.director.builder.clear_targets()
        for ecu, (path, data, hw, rc) in entries.items():
            self.director.builder.add_target(
                director_entry(data, path, ecu, hw, release_counter=rc)
            )
        self.director.publish(now)

    # --- the vehicle -----------------------------------------------------------------------

    def run(self, now: datetime = NOW) -> FullVerificationResult:
        return full_verification(
            self.director_trust,
            self.image_trust,
            MapFile.default(),
            {"director": self.director.source, "image": self.image.source},
            now,
            self.vehicle,
            PRIMARY,
        )

    def install(self, result: FullVerificationResult) -> None:
        for a in result.images:
            self.vehicle.installed_release_counters[a.ecu_id] = a.release_counter or 0
            self.vehicle.installed_images[a.ecu_id] = a.director_target

    @staticmethod
    def approved(result: FullVerificationResult) -> dict[str, str]:
        return {a.ecu_id: a.path for a in result.images}

    def refused(self, error: type[Exception], now: datetime = NOW) -> Exception:
        """Full verification must fail with ``error``; nothing is approved, the installed
        state is unchanged."""
        before = copy.deepcopy(self.vehicle)
        with pytest.raises(error) as info:
            self.install(self.run(now))
        assert self.vehicle == before
        return info.value

    # --- the attacker ----------------------------------------------------------------------

    @staticmethod
    def forge(
        repo: Repo, role: str, keys: list[PrivateKey], change: Callable[[Any], None]
    ) -> bytes:
        """``role`` as last published, changed by ``change`` and signed with ``keys``."""
        signed = repo.current(role)
        change(signed)
        return repo.sign(signed, *keys)

    @staticmethod
    def serve(repo: Repo, role: str, version: int | None, data: bytes) -> None:
        """The man in the middle answers requests for ``role`` with ``data``."""
        repo.source.overrides[metadata_filename(role, version, JSON)] = data


@pytest.fixture
def scene() -> Scene:
    return Scene()


def _entry(path: str, data: bytes, hw: str, rc: int) -> TargetFile:
    return TargetFile.from_data(path, data, hardware_ids=[hw], release_counter=rc)


# --- Image repository keys -------------------------------------------------------------------


def test_key_image_timestamp_can_freeze_until_the_snapshot_expires_cannot_install(scene):
    """Image timestamp key: the attacker keeps the vehicle on the Image repository's old
    snapshot (a freeze, so a new release is not found) until that snapshot expires; it
    cannot make the vehicle trust any snapshot or targets it made itself."""
    key = scene.image.keys["timestamp"]
    old = scene.image.current("timestamp")
    old_snapshot = scene.image.builder.files[JSON]["snapshot"]  # replayed by the attacker
    scene.serve(scene.image, "snapshot", old.snapshot_meta.version, old_snapshot)
    scene.add_image(*engine(5), "engine-v1", 5)
    scene.assign({"ecu-engine": (*engine(5), "engine-v1", 5)})

    def frozen(ts: Any, version: int, now: datetime) -> None:
        ts.version = version
        ts.snapshot_meta = copy.deepcopy(old.snapshot_meta)
        ts.expires = now + timedelta(days=1)

    newest = scene.image.current("timestamp").version
    scene.serve(
        scene.image,
        "timestamp",
        None,
        scene.forge(scene.image, "timestamp", key, lambda t: frozen(t, newest + 1, NOW)),
    )
    scene.refused(TargetNotFound)  # can: the new release stays invisible (freeze)

    later = NOW + timedelta(days=8)  # the frozen snapshot expired after 7 days
    scene.director.builder.mark("snapshot")
    scene.director.publish(later)
    scene.serve(
        scene.image,
        "timestamp",
        None,
        scene.forge(scene.image, "timestamp", key, lambda t: frozen(t, newest + 2, later)),
    )
    err = scene.refused(ExpiredMetadata, later)  # cannot: freeze past the snapshot's expiry
    assert err.repository == "image"

    # cannot: a snapshot signed with the timestamp key (a fresh vehicle, a new release)
    scene = Scene()
    key = scene.image.keys["timestamp"]
    scene.add_image(*engine(5), "engine-v1", 5)
    scene.assign({"ecu-engine": (*engine(5), "engine-v1", 5)})
    snap = scene.image.current("snapshot")
    snap.version += 1
    snap.meta["targets.json"].version += 1
    forged = scene.image.sign(snap, *key)
    scene.serve(scene.image, "snapshot", snap.version, forged)
    scene.serve(
        scene.image,
        "timestamp",
        None,
        scene.forge(scene.image, "timestamp", key, _naming(forged, snap.version)),
    )
    scene.refused(ThresholdNotMet)


def _naming(snapshot: bytes, version: int) -> Callable[[Any], None]:
    """A change to a timestamp: name ``snapshot`` (its version, length and hash)."""

    def change(ts: Any) -> None:
        ts.version += 5
        ts.snapshot_meta.version = version
        ts.snapshot_meta.length = len(snapshot)
        ts.snapshot_meta.hashes = {"sha256": hashlib.sha256(snapshot).hexdigest()}

    return change


def test_key_image_snapshot_alone_cannot_change_anything(scene):
    """Image snapshot key: a snapshot it signs does not match the timestamp's hashes
    (mix-and-match), so alone it can neither roll back nor add anything."""
    scene.add_image(*engine(5), "engine-v1", 5)
    scene.assign({"ecu-engine": (*engine(5), "engine-v1", 5)})
    snap = scene.image.current("snapshot")

    def older_targets(s: Any) -> None:
        s.meta["targets.json"].version -= 1

    scene.serve(
        scene.image,
        "snapshot",
        snap.version,
        scene.forge(scene.image, "snapshot", scene.image.keys["snapshot"], older_targets),
    )
    scene.refused(MixAndMatchAttack)


def test_key_image_snapshot_and_timestamp_cannot_roll_back_targets(scene):
    """Both online Image keys (timestamp + snapshot): still no rollback of the targets a
    vehicle trusts (§5.4.4.5), and no new image without the targets key."""
    import hashlib

    keys = scene.image.keys
    scene.add_image(*engine(5), "engine-v1", 5)
    scene.assign({"ecu-engine": (*engine(5), "engine-v1", 5)})
    snap = scene.image.current("snapshot")
    snap.version += 1
    snap.meta["targets.json"].version = 1
    forged = scene.image.sign(snap, *keys["snapshot"])
    scene.serve(scene.image, "snapshot", snap.version, forged)

    def naming(ts: Any) -> None:
        ts.version += 1
        ts.snapshot_meta.version = snap.version
        ts.snapshot_meta.length = len(forged)
        ts.snapshot_meta.hashes = {"sha256": hashlib.sha256(forged).hexdigest()}

    scene.serve(
        scene.image,
        "timestamp",
        None,
        scene.forge(scene.image, "timestamp", keys["timestamp"], naming),
    )
    scene.refused(RollbackAttack)


def test_key_image_targets_can_list_images_but_not_install_one_the_director_did_not_name(scene):
    """Image targets key (offline, stolen): served in place of the next genuine targets
    (same version), its listing is trusted; but nothing the Director does not name is
    installed, and changing an image the Director names is a mismatch."""
    key = scene.image.keys["targets"]
    scene.add_image(*engine(5), "engine-v1", 5)
    scene.assign({"ecu-engine": (*engine(5), "engine-v1", 5)})
    version = scene.image.current("targets").version

    def add_malware(t: Targets) -> None:
        t.targets["engine/evil.bin"] = _entry("engine/evil.bin", EVIL, "engine-v1", 99)

    scene.serve(
        scene.image, "targets", version, scene.forge(scene.image, "targets", key, add_malware)
    )
    result = scene.run()
    assert scene.approved(result) == {"ecu-engine": "engine/fw-5.bin"}  # can list; cannot install

    # a fresh vehicle, and the attacker rewrites the image the Director does name
    scene = Scene()
    key = scene.image.keys["targets"]
    scene.add_image(*engine(5), "engine-v1", 5)
    scene.assign({"ecu-engine": (*engine(5), "engine-v1", 5)})

    def swap(t: Targets) -> None:
        t.targets["engine/fw-5.bin"] = _entry("engine/fw-5.bin", EVIL, "engine-v1", 5)

    scene.serve(scene.image, "targets", version, scene.forge(scene.image, "targets", key, swap))
    scene.refused(TargetMismatch)


def test_key_delegated_supplier_is_confined_to_its_paths_and_the_director(scene):
    """A supplier's key: it can sign anything under its delegation (``brake/*``), but the
    vehicle installs only what the Director names with the same hashes, and even a
    Director naming a path outside the delegation finds no such image there."""
    scene.add_image(*brake(6), "brake-v2", 6, role="acme-brakes")
    scene.assign({"ecu-brake": (*brake(6), "brake-v2", 6)})
    version = scene.image.builder.role("acme-brakes").version

    def swap(t: Targets) -> None:
        t.targets["brake/fw-6.bin"] = _entry("brake/fw-6.bin", EVIL, "brake-v2", 6)
        t.targets["engine/evil.bin"] = _entry("engine/evil.bin", EVIL, "engine-v1", 99)

    scene.serve(
        scene.image,
        "acme-brakes",
        version,
        scene.forge(scene.image, "acme-brakes", [scene.supplier], swap),
    )
    scene.refused(TargetMismatch)

    # with a (separately compromised) Director naming the supplier's out-of-path entry
    scene.assign({"ecu-engine": ("engine/evil.bin", EVIL, "engine-v1", 99)})
    scene.refused(TargetNotFound)


# --- Director online keys --------------------------------------------------------------------


def _director_targets_swap(scene: Scene, change: Callable[[Targets], None]) -> None:
    """The Director publishes its next targets; the attacker holding the Director's
    targets key serves its own version of it instead."""
    scene.assign(
        {"ecu-brake": (*brake(5), "brake-v2", 5), "ecu-engine": (*engine(3), "engine-v1", 3)}
    )
    version = scene.director.current("targets").version

    def forged(t: Targets) -> None:
        t.targets.clear()
        change(t)

    data = scene.forge(scene.director, "targets", scene.director.keys["targets"][:1], forged)
    scene.serve(scene.director, "targets", version, data)


def test_key_director_targets_can_choose_among_genuine_images_only(scene):
    """Director targets key: it decides which *genuine* image an ECU gets (here engine v4,
    which the OEM did not assign), but cannot install an image the Image repository does
    not list, an older one (release counter), or one for other hardware."""
    eng4_path, eng4 = engine(4)
    _director_targets_swap(
        scene,
        lambda t: t.targets.__setitem__(
            eng4_path, director_entry(eng4, eng4_path, "ecu-engine", "engine-v1", release_counter=4)
        ),
    )
    assert scene.approved(scene.run()) == {"ecu-engine": "engine/fw-4.bin"}  # can

    for path, data, ecu, hw, rc, error in (
        ("engine/evil.bin", EVIL, "ecu-engine", "engine-v1", 99, TargetNotFound),
        (*engine(2), "ecu-engine", "engine-v1", 2, RollbackAttack),
        (*brake(5), "ecu-engine", "brake-v2", 5, BadHardwareId),
    ):
        fresh = Scene()
        _director_targets_swap(
            fresh,
            lambda t, p=path, d=data, e=ecu, h=hw, r=rc: t.targets.__setitem__(
                p, director_entry(d, p, e, h, release_counter=r)
            ),
        )
        fresh.refused(error)


def test_key_director_snapshot_alone_cannot_change_anything(scene):
    """Director snapshot key: its snapshot does not match the timestamp (mix-and-match)."""
    scene.assign({"ecu-engine": (*engine(4), "engine-v1", 4)})
    snap = scene.director.current("snapshot")

    def older(s: Any) -> None:
        s.meta["targets.json"].version -= 1

    scene.serve(
        scene.director,
        "snapshot",
        snap.version,
        scene.forge(scene.director, "snapshot", scene.director.keys["snapshot"][:1], older),
    )
    scene.refused(MixAndMatchAttack)


def test_key_director_timestamp_can_freeze_until_expiry_cannot_install(scene):
    """Director timestamp key: fresh timestamps naming the old snapshot hide a new
    assignment (a freeze: nothing new to install) until the Director's snapshot expires;
    a snapshot it signs itself is refused."""
    key = scene.director.keys["timestamp"][:1]
    old = scene.director.current("timestamp")
    old_snapshot = scene.director.builder.files[JSON]["snapshot"]  # replayed by the attacker
    scene.serve(scene.director, "snapshot", old.snapshot_meta.version, old_snapshot)
    scene.assign({"ecu-engine": (*engine(4), "engine-v1", 4)})
    newest = scene.director.current("timestamp").version

    def frozen(ts: Any, version: int, now: datetime) -> None:
        ts.version = version
        ts.snapshot_meta = copy.deepcopy(old.snapshot_meta)
        ts.expires = now + timedelta(days=1)

    scene.serve(
        scene.director,
        "timestamp",
        None,
        scene.forge(scene.director, "timestamp", key, lambda t: frozen(t, newest + 1, NOW)),
    )
    result = scene.run()
    assert result.images == []  # can: the new assignment is not seen

    later = NOW + timedelta(days=8)
    scene.image.builder.mark("snapshot")
    scene.image.publish(later)
    scene.serve(
        scene.director,
        "timestamp",
        None,
        scene.forge(scene.director, "timestamp", key, lambda t: frozen(t, newest + 2, later)),
    )
    err = scene.refused(ExpiredMetadata, later)  # cannot: past the snapshot's expiry
    assert err.repository == "director"


def test_key_director_root_below_threshold_cannot_rotate_keys(scene):
    """One of the Director's two root keys: a new root (the attacker's own online keys)
    signed by it alone is refused, so the online keys cannot be replaced."""
    evil = PrivateKey.generate()

    def takeover(root: Any) -> None:
        root.version += 1
        for role in ("targets", "snapshot", "timestamp"):
            for kid in list(root.roles[role].keyids):
                root.revoke_key(kid, role)
            root.add_key(evil.key, role)

    root_v = scene.director.current("root").version
    data = scene.forge(scene.director, "root", scene.director.keys["root"][:1], takeover)
    scene.serve(scene.director, "root", root_v + 1, data)
    scene.refused(ThresholdNotMet)
    assert scene.director_trust.root.signed.version == root_v


def test_key_whole_director_compromised_installs_no_arbitrary_image(scene):
    """Every Director key, root included (it rotates the Director to keys of its own):
    still no image the Image repository does not vouch for, and no rollback."""
    evil = PrivateKey.generate()
    d = scene.director
    root_v = d.current("root").version

    def takeover(root: Any) -> None:
        root.version += 1
        for role in ("targets", "snapshot", "timestamp"):
            for kid in list(root.roles[role].keyids):
                root.revoke_key(kid, role)
            root.add_key(evil.key, role)
        root.roles["snapshot"].threshold = root.roles["timestamp"].threshold = 1

    new_root = Scene.forge(d, "root", d.keys["root"], takeover)
    scene.serve(d, "root", root_v + 1, new_root)

    for path, data, hw, rc, error in (
        ("engine/evil.bin", EVIL, "engine-v1", 99, TargetNotFound),
        ("engine/fw-3.bin", EVIL, "engine-v1", 3, TargetMismatch),
        (*engine(2), "engine-v1", 2, RollbackAttack),
    ):
        _serve_own_director(scene, evil, {"ecu-engine": (path, data, hw, rc)})
        scene.refused(error)
        scene.director_trust = RepositoryTrust(
            "director", d.builder.trusted_root(JSON), PRIMARY, vehicle_id=VIN, ecu_ids=list(ECUS)
        )
        scene.vehicle.installed_release_counters.update({"ecu-brake": 5, "ecu-engine": 3})


def _serve_own_director(
    scene: Scene, key: PrivateKey, entries: dict[str, tuple[str, bytes, str, int]]
) -> None:
    """The attacker's whole Director repository for this vehicle, signed with ``key``."""
    import hashlib

    d = scene.director
    targets = d.current("targets")
    targets.version += 10
    targets.targets.clear()
    for ecu, (path, data, hw, rc) in entries.items():
        targets.targets[path] = director_entry(data, path, ecu, hw, release_counter=rc)
    t_bytes = d.sign(targets, key)
    snap = d.current("snapshot")
    snap.version += 10
    snap.meta["targets.json"].version = targets.version
    s_bytes = d.sign(snap, key)
    ts = d.current("timestamp")
    ts.version += 10
    ts.snapshot_meta.version = snap.version
    ts.snapshot_meta.length = len(s_bytes)
    ts.snapshot_meta.hashes = {"sha256": hashlib.sha256(s_bytes).hexdigest()}
    Scene.serve(d, "targets", targets.version, t_bytes)
    Scene.serve(d, "snapshot", snap.version, s_bytes)
    Scene.serve(d, "timestamp", None, d.sign(ts, key))
