"""Attack matrix at the Primary (§4.3), the rows ``tests/primary/test_cycle_attacks.py``
does not already cover: endless data on every role of both repositories, release-counter
rollback, a freeze by replaying this vehicle's own older metadata, and a replayed version
report on the Secondary's link. Real Image repository and Director services on
127.0.0.1 behind a man-in-the-middle proxy, a real Primary and in-process Secondary
agents (``tests/primary/cycle_support.py``). Each test asserts the named error and that
nothing was installed. ``docs/security.md`` maps every row to its tests."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cycle_support import LIMITS, VIN, backend_and_vehicle
from test_cycle_attacks import assert_refused, get

from primary.secondaries import serve_inprocess
from uptane.errors import (
    DirectorDelegation,
    DropRequestAttack,
    EndlessDataAttack,
    ExpiredMetadata,
    RepeatedEcuId,
    ReplayAttack,
    RollbackAttack,
    TargetMismatch,
    TargetNotFound,
    ThresholdNotMet,
)
from uptane.keys import PrivateKey
from uptane.manifest import decode_vehicle_manifest
from uptane.metadata import DER, JSON, DelegatedRole, Delegations, Metadata, MetaFile, TargetFile

BRAKES = "brakes/fw-2.bin"
ONE = {"brk-1": "brk-v1"}


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.mark.parametrize(
    "repo,suffix",
    [
        ("director", "timestamp.json"),
        ("director", "snapshot.json"),
        ("director", "targets.json"),
        ("image", "timestamp.json"),
        ("image", "snapshot.json"),
        ("image", "targets.json"),
    ],
)
def test_4_3_endless_data_every_role_is_cut_at_its_cap(tmp_path, now, repo, suffix):
    """Each role of each repository, padded past its cap by the man in the middle: the
    download stops at the cap (a timestamp-listed length for the snapshot)."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        cap = LIMITS.bytes_for_role(suffix.split(".")[0])
        proxy = backend.director_proxy if repo == "director" else backend.image_proxy
        proxy.rules.tamper[suffix] = lambda b: b + b" " * (cap + 1)
        result = car.cycle()
        assert_refused(car, result, EndlessDataAttack, "endless-data")


def test_4_3_rollback_release_counter_of_an_older_image(tmp_path, now):
    """The Director (compromised, or a mistaken assignment) offers an image whose release
    counter is below the installed one: refused before download (§5.4.4.2 step 10)."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", "brakes/fw-3.bin")])
        assert car.cycle().installed == {"brk-1": "brakes/fw-3.bin"}
        car.cycle()  # the manifest confirms the bundle
        backend.assign(VIN, [("brk-1", BRAKES)])  # release counter 2 < 3
        result = car.cycle()
        assert isinstance(result.error, RollbackAttack), result.error
        assert result.installed == {}
        assert car.installed("brk-1") == "brakes/fw-3.bin"


def test_4_3_freeze_replayed_metadata_of_an_older_cycle_until_it_expires(tmp_path, now):
    """The man in the middle keeps serving this vehicle's own Director metadata of an
    older (empty) cycle, so the new assignment is never seen; once that metadata expires
    the Primary names the freeze and installs nothing."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        assert car.cycle().error is None
        base = f"{backend.director_server.url}/vehicles/{VIN}/metadata"
        old = get(f"{base}/timestamp.json")
        backend.assign(VIN, [("brk-1", BRAKES)])
        backend.director_proxy.rules.tamper["timestamp.json"] = lambda b: old
        frozen = car.cycle()
        assert frozen.installed == {} and car.installed("brk-1") is None
        later = timedelta(days=3)  # past the Director timestamp's expiry
        backend.advance(later)
        car.time.set(car.time.now() + later)
        result = car.cycle()
        assert_refused(car, result, ExpiredMetadata, "freeze")


class ReplayingLink:
    """A man in the middle on a Secondary's link: it passes everything to the real agent
    but answers every report request with the first report it saw (a replay)."""

    endpoint = None  # served through a plain SecondaryEndpoint, so report() is ours

    def __init__(self, agent) -> None:
        self.agent = agent
        self.first: bytes | None = None

    def __getattr__(self, name):
        return getattr(self.agent, name)

    def report(self, nonce: bytes) -> bytes:
        fresh = self.agent.report(nonce)
        if self.first is None:
            self.first = fresh
        return self.first


def test_4_3_replayed_version_report_never_reaches_the_director(tmp_path, now):
    """A replayed report (an old nonce) is refused and named; the manifest the Director
    gets leaves that ECU's report out, so the Director is not misled about what it runs.
    (The update itself still goes to the ECU, which verifies it on its own.)"""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        ecu = car.ecus["brk-1"]
        ecu.served.close()
        link = ReplayingLink(ecu.agent)
        ecu.served = serve_inprocess("brk-1", link, LIMITS)
        assert car.cycle().error is None  # the first report is genuine
        backend.assign(VIN, [("brk-1", BRAKES)])
        result = car.cycle()
        assert any(a["attack"] == ReplayAttack.attack for a in result.attacks), result.attacks
        body = backend.director_proxy.posts[-1][2]
        enc = JSON if body[:1] == b"{" else DER
        vvm = decode_vehicle_manifest(body, LIMITS, enc)
        assert vvm.signed.report_for("brk-1") is None


def test_4_3_partial_bundle_one_image_dropped_installs_none(tmp_path, now):
    """A man in the middle keeps cutting the download of one image of a two-ECU bundle:
    the Primary names the drop-request and must install no part of the bundle."""
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES), ("tcu-1", "tcu/tcu-5.bin")])
        backend.image_proxy.rules.cut["tcu-5.bin"] = [10, 100]
        result = car.cycle()
        assert isinstance(result.error, DropRequestAttack), result.error
        assert result.installed == {}
        assert car.installed("brk-1") is None and car.installed("tcu-1") is None


# --- a compromised Director (its online keys) against the Primary ---------------------------


def compromised_director(backend, change, *, targets_key=None) -> None:
    """The attacker holds the Director's online keys (targets, snapshot, timestamp, read
    from the service's key directory): the proxy serves this vehicle's newest Director
    metadata with its targets changed by ``change`` and re-signed (by ``targets_key`` if
    given), the snapshot and timestamp re-bound to it, under the versions the Director
    published (so the vehicle has not seen them yet)."""
    keys = {
        r: PrivateKey.from_pem((backend.director_dir / "online-keys" / f"{r}.pem").read_bytes())
        for r in ("targets", "snapshot", "timestamp")
    }
    base = f"{backend.director_server.url}/vehicles/{VIN}/metadata"
    ts = Metadata.from_json(get(f"{base}/timestamp.json"), LIMITS)
    sv = ts.signed.snapshot_meta.version
    snap = Metadata.from_json(get(f"{base}/{sv}.snapshot.json"), LIMITS)
    tv = snap.signed.meta["targets.json"].version
    targets = Metadata.from_json(get(f"{base}/{tv}.targets.json"), LIMITS)

    def signed(model, key) -> bytes:
        md = Metadata(copy.deepcopy(model), encoding=JSON)
        md.sign(key)
        return md.to_bytes()

    def bind(meta: MetaFile, data: bytes) -> MetaFile:
        return MetaFile(
            meta.version,
            len(data) if meta.length is not None else None,
            {a: hashlib.new(a, data).hexdigest() for a in meta.hashes} if meta.hashes else None,
        )

    t = copy.deepcopy(targets.signed)
    change(t)
    t_bytes = signed(t, targets_key or keys["targets"])
    s = copy.deepcopy(snap.signed)
    s.meta["targets.json"] = bind(s.meta["targets.json"], t_bytes)
    s_bytes = signed(s, keys["snapshot"])
    stamp = copy.deepcopy(ts.signed)
    stamp.snapshot_meta = bind(stamp.snapshot_meta, s_bytes)
    ts_bytes = signed(stamp, keys["timestamp"])
    rules = backend.director_proxy.rules
    rules.tamper[f"/{tv}.targets.json"] = lambda _b: t_bytes
    rules.tamper[f"/{sv}.snapshot.json"] = lambda _b: s_bytes
    rules.tamper["/timestamp.json"] = lambda _b: ts_bytes


def _entry_for(path: str, data: bytes, ecu: str = "brk-1", hw: str = "brk-v1", rc: int = 2):
    return TargetFile.from_data(
        path, data, ("sha256",), hardware_ids=[hw], release_counter=rc, ecu_ids={ecu: hw}
    )


def test_compromised_director_that_delegates_is_refused(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        k = PrivateKey.generate()

        def delegate(t) -> None:
            t.delegations = Delegations(
                {k.key.keyid: k.key}, [DelegatedRole("evil", [k.key.keyid], 1, paths=["*"])]
            )

        compromised_director(backend, delegate)
        assert_refused(car, car.cycle(), DirectorDelegation, "arbitrary-software")


def test_compromised_director_naming_one_ecu_twice_is_refused(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])

        def twice(t) -> None:
            data = b"brakes three" * 300  # brakes/fw-3.bin, genuine in the Image repository
            t.targets["brakes/fw-3.bin"] = _entry_for("brakes/fw-3.bin", data, rc=3)

        compromised_director(backend, twice)
        assert_refused(car, car.cycle(), RepeatedEcuId, "arbitrary-software")


def test_director_targets_under_threshold_are_refused(tmp_path, now):
    """Director targets signed by a key that is not the Director's, bound into a snapshot
    and timestamp by the real online keys: the targets role's threshold is not met."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        compromised_director(backend, lambda t: None, targets_key=PrivateKey.generate())
        assert_refused(car, car.cycle(), ThresholdNotMet, "arbitrary-software")


@pytest.mark.parametrize(
    "path,data,error",
    [
        ("brakes/evil.bin", b"malware " * 100, TargetNotFound),
        (BRAKES, b"malware " * 100, TargetMismatch),
    ],
    ids=["image-not-in-image-repo", "director-image-mismatch"],
)
def test_key_director_online_keys_compromised_no_arbitrary_image_at_the_primary(
    tmp_path, now, path, data, error
):
    """Every Director online key: the Director names malware (a new path, or the real
    path with other hashes); the Image repository does not vouch for it."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])

        def evil(t) -> None:
            t.targets.clear()
            t.targets[path] = _entry_for(path, data, rc=9)

        compromised_director(backend, evil)
        assert_refused(car, car.cycle(), error, "arbitrary-software")


def test_4_3_fast_forward_recovery_after_director_timestamp_key_rotation(tmp_path, now):
    """The Director's timestamp key leaked: the attacker fast-forwards the vehicle's
    trusted timestamp to version 10^6, which then refuses every genuine one (rollback).
    The OEM rotates the key (``Director.rotate_key``, root v2): the Primary follows the
    root, forgets the fast-forwarded timestamp and snapshot (§5.4.4.3) and installs."""
    from director.director import default_offline_dir

    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        assert car.cycle().error is None
        leaked = PrivateKey.from_pem(
            (backend.director_dir / "online-keys" / "timestamp.pem").read_bytes()
        )
        base = f"{backend.director_server.url}/vehicles/{VIN}/metadata"
        ts = Metadata.from_json(get(f"{base}/timestamp.json"), LIMITS)
        ts.signed.version = 1_000_000
        ts.signatures = []
        ts.refresh_payload()
        ts.sign(leaked)
        ahead = ts.to_bytes()
        backend.director_proxy.rules.tamper["/timestamp.json"] = lambda _b: ahead
        assert car.cycle().error is None  # validly signed: the fast-forward lands
        director, _ = car.primary().load_trust()
        assert director.timestamp is not None and director.timestamp.signed.version == 1_000_000
        backend.director_proxy.reset()
        backend.assign(VIN, [("brk-1", BRAKES)])
        stuck = car.cycle()
        assert isinstance(stuck.error, RollbackAttack), stuck.error
        assert stuck.installed == {} and car.installed("brk-1") is None

        backend.director.rotate_key("timestamp", default_offline_dir(backend.director_dir))
        recovered = car.cycle()
        assert recovered.error is None, recovered.error
        assert recovered.installed == {"brk-1": BRAKES}
