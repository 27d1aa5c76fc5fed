"""Hostile servers and men in the middle, end to end at the Primary (§4.3, §5.4.4.2): for
each attack the core names, the cycle stops with that error, the Primary records it for the
next manifest, and nothing is installed anywhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import urllib3
from cycle_support import VIN, Vehicle, backend_and_vehicle

from director.director import EcuSpec
from director.image_repo import ImageRepository, default_offline_dir
from hardware.protocol import SecondaryEndpoint
from primary.config import load_config
from primary.secondaries import serve_inprocess
from primary.state import PrimaryState
from uptane.errors import (
    ArbitrarySoftwareAttack,
    BadHash,
    BadSignature,
    DropRequestAttack,
    EndlessDataAttack,
    MixAndMatchAttack,
    RollbackAttack,
    TargetMismatch,
    ThresholdNotMet,
    UptaneError,
    VehicleMismatch,
)
from uptane.keys import PrivateKey
from uptane.limits import Limits

BRAKES = "brakes/fw-2.bin"
ONE = {"brk-1": "brk-v1"}


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def get(url: str) -> bytes:
    r = urllib3.request("GET", url, retries=False)
    assert r.status == 200, url
    return r.data


def assert_refused(car: Vehicle, result, error: type[UptaneError], attack: str) -> None:
    """The named error stopped the cycle, it is kept for the next manifest, and no ECU
    installed anything."""
    assert isinstance(result.error, error), repr(result.error)
    assert result.installed == {}
    rec = PrimaryState(car.config.storage_dir, car.config.limits).load_cycle()
    assert rec.installed == {}
    assert rec.attacks and rec.attacks[-1]["attack"] == attack
    for serial in car.ecus:
        assert car.installed(serial) is None


def flip_json_hash(body: bytes) -> bytes:
    doc = json.loads(body)
    for entry in doc["signed"]["targets"].values():
        h = entry["hashes"]["sha256"]
        entry["hashes"]["sha256"] = ("0" if h[0] != "0" else "1") + h[1:]
    return json.dumps(doc).encode()


def test_4_3_arbitrary_software_director_targets_tampered_in_transit(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        backend.director_proxy.rules.tamper["targets.json"] = flip_json_hash
        result = car.cycle()
        # the snapshot's hash of the file catches it first, else the signatures would
        assert isinstance(result.error, (MixAndMatchAttack, ThresholdNotMet)), result.error
        attack = result.error.attack
        assert_refused(car, result, type(result.error), attack)


def test_4_3_arbitrary_software_image_bytes_swapped_in_transit(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        backend.image_proxy.rules.tamper["fw-2.bin"] = lambda b: b[:-1] + bytes([b[-1] ^ 1])
        result = car.cycle()
        assert_refused(car, result, BadHash, "arbitrary-software")
        # the bad part was deleted: the next honest cycle downloads it in full and installs
        backend.image_proxy.reset()
        assert car.cycle().installed == {"brk-1": BRAKES}


def test_4_3_endless_data_image_longer_than_signed(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        backend.image_proxy.rules.tamper["fw-2.bin"] = lambda b: b + b"\0" * 100_000
        result = car.cycle()
        assert_refused(car, result, EndlessDataAttack, "endless-data")


def test_4_3_endless_data_metadata_over_its_cap(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        backend.director_proxy.rules.tamper["timestamp.json"] = lambda b: b + b" " * (1 << 20)
        result = car.cycle()
        assert_refused(car, result, EndlessDataAttack, "endless-data")


def test_4_3_rollback_replayed_older_director_timestamp(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        old = get(f"{backend.director_server.url}/vehicles/{VIN}/metadata/timestamp.json")
        assert car.cycle().error is None
        backend.assign(VIN, [("brk-1", BRAKES)])
        newer = car.cycle()
        assert newer.installed == {"brk-1": BRAKES}
        car.cycle()  # its manifest tells the Director the first bundle is installed
        backend.assign(VIN, [("brk-1", "brakes/fw-3.bin")])
        backend.director_proxy.rules.tamper["timestamp.json"] = lambda b: old
        result = car.cycle()
        assert isinstance(result.error, RollbackAttack), result.error
        assert result.installed == {}
        assert car.installed("brk-1") == BRAKES  # not fw-3


def test_4_3_mix_and_match_targets_from_another_snapshot(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        old = get(f"{backend.director_server.url}/vehicles/{VIN}/metadata/targets.json")
        assert car.cycle().error is None
        backend.assign(VIN, [("brk-1", BRAKES)])
        backend.director_proxy.rules.tamper["targets.json"] = lambda b: old
        result = car.cycle()
        assert_refused(car, result, MixAndMatchAttack, "mix-and-match")


def test_5_2_3_1_freeze_director_metadata_of_another_vehicle_replayed(tmp_path, now):
    """An update is waiting, but a man in the middle serves the genuine, signed, empty
    Director metadata of another vehicle to keep this one on its old image: the vehicle
    id that empty Director targets SHALL carry (§5.2.3.1) gives it away."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        other = "VIN-OTHER-2"
        k = PrivateKey.generate()
        backend.register(
            other,
            [EcuSpec("x-gw", "gw-v1", k.key, True), EcuSpec("x-brk", "brk-v1", k.key, False)],
        )
        backend.assign(VIN, [("brk-1", BRAKES)])
        backend.director_proxy.rules.rewrite[f"/vehicles/{VIN}/metadata/"] = (
            f"/vehicles/{other}/metadata/"
        )
        result = car.cycle()
        assert_refused(car, result, VehicleMismatch, "freeze")


def test_4_3_drop_request_director_never_answers(tmp_path, now):
    """Nothing answers: the cycle stops with the named error and nothing is installed. An
    outage looks the same, so it is kept as the last error, not reported as an attack
    (a backend restart must not fail the vehicle's updates, docs/security.md)."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        backend.director_proxy.rules.cut["timestamp.json"] = [0, 100]
        result = car.cycle()
        assert isinstance(result.error, DropRequestAttack), result.error
        assert result.installed == {} and car.installed("brk-1") is None
        rec = PrimaryState(car.config.storage_dir, car.config.limits).load_cycle()
        assert rec.attacks == [] and "drop-request" in (rec.last_error or "")
        backend.director_proxy.reset()
        assert car.cycle().installed == {"brk-1": BRAKES}


def test_4_3_partial_bundle_one_image_dropped_installs_none(tmp_path, now):
    """A man in the middle keeps cutting one image of a two-ECU bundle: no ECU gets its
    image until the whole bundle is downloaded."""
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES), ("tcu-1", "tcu/tcu-5.bin")])
        backend.image_proxy.rules.cut["tcu-5.bin"] = [10, 100]
        result = car.cycle()
        assert isinstance(result.error, DropRequestAttack), result.error
        assert result.installed == {}
        assert car.installed("brk-1") is None and car.installed("tcu-1") is None
        assert "bundle incomplete, nothing sent" in "\n".join(car.lines)
        backend.image_proxy.reset()
        done = car.cycle()
        assert done.installed == {"brk-1": BRAKES, "tcu-1": "tcu/tcu-5.bin"}
        assert done.downloaded == ["tcu/tcu-5.bin"]  # brk's image was kept


def test_5_4_4_2_image_repository_compromised_alone_cannot_change_an_image(tmp_path, now):
    """The Image repository's keys (offline ones included) re-sign brakes/fw-2.bin with
    other bytes after the Director assigned it: the Director's entry and the Image
    repository's disagree (§5.4.4.2 step 10.2), so full verification refuses it."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        d = backend.image_dir
        repo = ImageRepository(d, now, offline_dir=default_offline_dir(d))
        evil = repo.stage_target(BRAKES, b"evil brakes" * 100, ["brk-v1"], 2)
        repo.sign(now)
        service = backend.image_server.server.config.app.state.service
        service.tick()  # the service picks up the offline change (as its refresher does)
        assert evil.hashes["sha256"] in str(service.repo.builder.targets.targets[BRAKES].hashes)
        result = car.cycle()
        assert_refused(car, result, TargetMismatch, "arbitrary-software")


def test_5_4_2_director_targets_in_der_tampered_is_not_forwarded(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])

        def flip_last(b: bytes) -> bytes:
            return b[:-1] + bytes([b[-1] ^ 1])  # inside the last signature

        backend.director_proxy.rules.tamper["targets.der"] = flip_last
        result = car.cycle()
        assert isinstance(result.error, ArbitrarySoftwareAttack), result.error
        assert result.installed == {} and car.installed("brk-1") is None
        rec = PrimaryState(car.config.storage_dir, car.config.limits).load_cycle()
        assert rec.pending["brk-1"].step == "downloaded"  # retried next cycle, not dropped
        backend.director_proxy.reset()
        assert car.cycle().installed == {"brk-1": BRAKES}


def test_5_4_2_report_not_signed_by_the_configured_ecu_key_is_refused(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (_backend, car):
        impostor = PrivateKey.generate()
        (car.root / "keys" / "brk-1.pub").write_text(json.dumps(impostor.key.to_dict()))
        car.config = load_config(car.config_path)
        result = car.cycle()
        assert result.attacks and result.attacks[0]["attack"] == BadSignature.attack
        assert "report refused" in "\n".join(car.lines)


def test_5_4_4_2_release_counter_rollback_is_refused(tmp_path, now):
    """The Director (compromised, or wrong) assigns an older image with a lower release
    counter than the one the ECU reports it runs: §5.4.4.2 step 10.2.3 refuses it."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", "brakes/fw-3.bin")])
        assert car.cycle().installed == {"brk-1": "brakes/fw-3.bin"}
        car.cycle()  # the manifest closes the bundle
        backend.assign(VIN, [("brk-1", BRAKES)])  # release counter 2 < 3
        result = car.cycle()
        assert isinstance(result.error, RollbackAttack), result.error
        assert result.installed == {}
        assert car.installed("brk-1") == "brakes/fw-3.bin"


class ReplayingLink:
    """A man in the middle on the Secondary's link that answers every report request with
    the first report it saw (a replay: an old nonce)."""

    def __init__(self, agent) -> None:
        self.agent = agent
        self.first: bytes | None = None

    def __getattr__(self, name: str):
        return getattr(self.agent, name)

    def report(self, nonce: bytes) -> bytes:
        data = self.agent.report(nonce)
        if self.first is None:
            self.first = data
        return self.first


def test_5_4_2_replayed_secondary_report_is_refused(tmp_path, now):

    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (_backend, car):
        ecu = car.ecus["brk-1"]
        ecu.served.close()
        proxy = ReplayingLink(ecu.agent)
        endpoint = SecondaryEndpoint(
            proxy, ecu.agent.limits, max_frame=1 << 16, link_key=ecu.agent.link_key
        )
        proxy.endpoint = lambda max_frame: endpoint  # serve the man in the middle
        ecu.served = serve_inprocess("brk-1", proxy, ecu.agent.limits)
        assert car.cycle().attacks == []  # the first report is genuine
        replayed = car.cycle()
        assert [a["attack"] for a in replayed.attacks] == ["replay"]
        assert "brk-1: report refused" in "\n".join(car.lines)


def test_5_4_4_3_image_repository_root_rotation_is_followed(tmp_path, now):
    """The Image repository rotates its root keys offline; the Primary walks the N+1 chain
    (§5.4.4.3) with no manual step and goes on installing."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        assert car.cycle().error is None
        d = backend.image_dir
        ImageRepository(d, now, offline_dir=default_offline_dir(d)).rotate_root(now)
        backend.image_server.server.config.app.state.service.tick()
        backend.assign(VIN, [("brk-1", BRAKES)])
        result = car.cycle()
        assert result.error is None, result.error
        assert result.installed == {"brk-1": BRAKES}
        state = PrimaryState(car.config.storage_dir, car.config.limits)
        from uptane.trust import RepositoryTrust

        trust = RepositoryTrust.load("image", state.read_metadata("image"), car.config.limits)
        assert trust.root.signed.version == 2


class TamperingLink(ReplayingLink):
    """A man in the middle inside the vehicle that flips one bit of every image chunk on
    its way to the Secondary."""

    def report(self, nonce: bytes) -> bytes:
        return self.agent.report(nonce)

    def put_image_chunk(self, filename: str, total: int, offset: int, chunk: bytes) -> None:
        self.agent.put_image_chunk(filename, total, offset, bytes([chunk[0] ^ 1]) + chunk[1:])


def test_5_4_3_image_tampered_on_the_vehicle_link_is_refused_by_the_secondary(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        ecu = car.ecus["brk-1"]
        ecu.served.close()
        mitm = TamperingLink(ecu.agent)
        endpoint = ecu.agent.endpoint(max_frame=1 << 16)
        endpoint.handler = mitm
        mitm.endpoint = lambda max_frame: endpoint
        ecu.served = serve_inprocess("brk-1", mitm, ecu.agent.limits)
        backend.assign(VIN, [("brk-1", BRAKES)])

        first = car.cycle()
        assert first.error is None and first.installed == {}
        assert "brk-1" in first.failed and "arbitrary-software" in first.failed["brk-1"]
        assert car.installed("brk-1") is None
        # the Secondary's own signed report names the attack in the next manifest
        car.cycle()
        vvm, _ = backend_manifests_with_attack(backend)
        brk = next(r for r in vvm.reports if r.signed.ecu_id == "brk-1")
        assert (brk.signed.attack or "").startswith("arbitrary-software")
        # with the Director's metadata unchanged, it is not offered again
        car.lines.clear()
        assert car.cycle().failed == {} and "sending" not in "\n".join(car.lines)
        assert car.installed("brk-1") is None


def backend_manifests_with_attack(backend):
    from uptane.manifest import decode_vehicle_manifest
    from uptane.metadata import DER, JSON

    for _path, status, body, _ in reversed(backend.director_proxy.posts):
        enc = JSON if body[:1] == b"{" else DER
        vvm = decode_vehicle_manifest(body, Limits.primary(), enc).signed
        if any(r.signed.attack for r in vvm.reports):
            return vvm, status
    raise AssertionError("no manifest carried a Secondary's attack indicator")
