"""Encrypted images and deltas through real Primary cycles (issue 17): the real Director
(encrypting per assignment, choosing a delta by the ECU's reported image) and Image
repository services, the Primary, and in-process Secondary agents.

- an encrypted and a plain ECU in one vehicle: the Primary downloads the ciphertext from the
  Director, never the plaintext, and no file it keeps holds a marker of the image;
- a delta goes to an ECU whose reported image is its base, the full image to one whose is
  not; an encrypted delta too; the Director confirms the full image from the reports;
- an in-vehicle attacker on the link (another ECU's ciphertext, a reordered or cut chunk),
  a stale key in the Director's inventory, and a Director that signs a swapped wrapped key
  or a delta for another base: the Secondary refuses each by name, nothing is installed,
  and the Director fails the assignment from the ECU's next report.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cycle_support import IMAGES, VIN, Backend, Vehicle, backend_and_vehicle

from director.image_repo import ImageRepository, default_offline_dir
from director.supplier import make_delta
from primary.secondaries import serve_inprocess
from primary.state import PrimaryState
from uptane.encryption import EncryptionPrivateKey, encrypt_image, transport_target, wrap_key
from uptane.limits import Limits
from uptane.metadata import JSON, TargetFile, decode

MARKER = b"<<issue-17 plaintext marker: must never cross the Primary>>"
BASE_PATH = "brakes/fw-2.bin"
BASE = IMAGES[BASE_PATH][0]
NEW_PATH = "brakes/fw-9.bin"
ONE = {"brk-1": "brk-v1"}
TWO = {"brk-1": "brk-v1", "tcu-1": "tcu-v5"}
TCU_PATH = "tcu/tcu-5.bin"


def _new_image() -> bytes:
    """``BASE`` with about 5 % of its bytes changed, and the marker."""
    rnd = random.Random(17)
    out = bytearray(BASE)
    for _ in range(20):
        off = rnd.randrange(0, len(out) - 600)
        out[off : off + 512] = rnd.randbytes(512)
    out[1000 : 1000 + len(MARKER)] = MARKER
    return bytes(out)


NEW = _new_image()


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def release(backend: Backend, *, delta_from: tuple[str, bytes] | None = None) -> str | None:
    """Sign NEW (and a delta to it from ``delta_from``) into the Image repository offline;
    the Director's view is refreshed. Returns the delta's path."""
    now = backend.clock()
    offline = default_offline_dir(backend.image_dir)
    repo = ImageRepository(backend.image_dir, now)
    repo.stage_target(NEW_PATH, NEW, ["brk-v1"], 9)
    path = None
    if delta_from is not None:
        path, patch, section = make_delta(delta_from[1], delta_from[0], NEW, NEW_PATH)
        repo.stage_target(path, patch, ["brk-v1"], 9, custom={"delta": section.to_dict()})
    ImageRepository(backend.image_dir, now, offline_dir=offline).sign(now)
    backend.director.image_view.refresh(force=True)
    return path


def director_entry(backend: Backend, path: str) -> TargetFile:
    data = backend.director.metadata_file(VIN, "targets.json")
    assert data is not None
    return decode(data, Limits.primary(), encoding=JSON, role_type="targets").signed.targets[path]


def primary_files(car: Vehicle) -> list[Path]:
    return [p for p in car.config.storage_dir.rglob("*") if p.is_file()]


def assert_no_marker(car: Vehicle) -> None:
    for p in primary_files(car):
        assert MARKER not in p.read_bytes(), f"the plaintext reached the Primary: {p}"


def asked(proxy: Any, part: str) -> list[str]:
    return [p for _m, p, _r in proxy.requests if part in p]


def installed_ok(car: Vehicle, serial: str, path: str, data: bytes) -> None:
    agent = car.ecus[serial].agent
    assert agent is not None
    st = agent.slots.status()
    assert st.installed is not None and st.installed.filename == path
    assert agent.flash.read(st.active, 0, len(data)) == data


def assignment_state(backend: Backend, serial: str) -> tuple[str, str | None]:
    a = [x for x in backend.director.list_assignments(vin=VIN) if x["ecu"] == serial][-1]
    return a["state"], a["reason"]


# --- what installs ---------------------------------------------------------------------------


def test_5_4_3_4_encrypted_and_plain_ecus_in_one_vehicle(tmp_path: Path, now: datetime) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries=TWO) as (backend, car):
        release(backend)
        backend.director.assign(
            VIN, [("brk-1", NEW_PATH), ("tcu-1", TCU_PATH)], encrypt={"brk-1": True}
        )
        entry = director_entry(backend, NEW_PATH)
        assert entry.encrypted is not None and set(entry.encrypted.wrapped_keys) == {"brk-1"}
        assert director_entry(backend, TCU_PATH).encrypted is None
        result = car.cycle()
        assert result.error is None and result.failed == {}, "\n".join(car.lines)
        installed_ok(car, "brk-1", NEW_PATH, NEW)
        installed_ok(car, "tcu-1", TCU_PATH, IMAGES[TCU_PATH][0])
        # the ciphertext came from the Director; the plaintext was never asked for
        wire = transport_target(entry, "brk-1")
        assert asked(backend.director_proxy, f"/vehicles/{VIN}/images/{wire.path}")
        assert not asked(backend.image_proxy, "fw-9.bin")
        assert_no_marker(car)
        car.cycle()  # the reports reach the Director
        assert assignment_state(backend, "brk-1") == ("installed", None)
        assert assignment_state(backend, "tcu-1") == ("installed", None)


def test_5_4_3_4_a_delta_to_the_ecu_that_runs_its_base(tmp_path: Path, now: datetime) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BASE_PATH)])
        assert car.cycle().installed == {"brk-1": BASE_PATH}
        car.cycle()  # the Director learns brk-1 runs the base
        delta = release(backend, delta_from=(BASE_PATH, BASE))
        assert delta is not None
        backend.director.assign(VIN, [("brk-1", NEW_PATH)])
        entry = director_entry(backend, delta)
        assert entry.delta is not None and entry.encrypted is None
        assert (
            NEW_PATH
            not in decode(
                backend.director.metadata_file(VIN, "targets.json"), Limits.primary(), encoding=JSON
            ).signed.targets
        )
        assert entry.length <= 0.15 * len(NEW)
        result = car.cycle()
        assert result.error is None and result.failed == {}, "\n".join(car.lines)
        installed_ok(car, "brk-1", NEW_PATH, NEW)
        assert not asked(backend.image_proxy, "fw-9.bin/") and not [
            p for p in asked(backend.image_proxy, "fw-9.bin") if not p.endswith(".patch")
        ]
        car.cycle()
        assert assignment_state(backend, "brk-1") == ("installed", None)
        # with the full image installed, nothing more goes
        car.lines.clear()
        assert car.cycle().installed == {}


def test_5_4_3_4_the_full_image_to_an_ecu_that_does_not_run_the_base(
    tmp_path: Path, now: datetime
) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        delta = release(backend, delta_from=(BASE_PATH, BASE))
        backend.director.assign(VIN, [("brk-1", NEW_PATH)])  # brk-1 runs nothing yet
        targets = decode(
            backend.director.metadata_file(VIN, "targets.json"), Limits.primary(), encoding=JSON
        ).signed.targets
        assert NEW_PATH in targets and delta not in targets
        assert car.cycle().installed == {"brk-1": NEW_PATH}
        installed_ok(car, "brk-1", NEW_PATH, NEW)


def test_5_4_3_4_an_encrypted_delta(tmp_path: Path, now: datetime) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BASE_PATH)])
        car.cycle()
        car.cycle()
        delta = release(backend, delta_from=(BASE_PATH, BASE))
        backend.director.set_encryption_rule("hardware", "brk-v1", True)
        backend.director.assign(VIN, [("brk-1", NEW_PATH)])
        entry = director_entry(backend, delta)  # type: ignore[arg-type]
        assert entry.delta is not None and entry.encrypted is not None
        result = car.cycle()
        assert result.error is None and result.failed == {}, "\n".join(car.lines)
        installed_ok(car, "brk-1", NEW_PATH, NEW)
        assert_no_marker(car)
        car.cycle()
        assert assignment_state(backend, "brk-1") == ("installed", None)


# --- refusals through a cycle -----------------------------------------------------------------


class Substituting:
    """An attacker on the vehicle's link (or a compromised Primary): every image chunk
    it relays is replaced by the same bytes of ``wire``; what crosses is kept."""

    def __init__(self, agent: Any, wire: bytes) -> None:
        self.agent = agent
        self.wire = wire
        self.seen = bytearray()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agent, name)

    def put_image_chunk(self, filename: str, total: int, offset: int, chunk: bytes) -> None:
        self.seen += chunk
        swapped = self.wire[offset : offset + len(chunk)] if self.wire else chunk
        self.agent.put_image_chunk(filename, total, offset, swapped)


def on_the_link(car: Vehicle, serial: str, wire: bytes) -> Substituting:
    ecu = car.ecus[serial]
    assert ecu.served is not None and ecu.agent is not None
    ecu.served.close()
    mitm = Substituting(ecu.agent, wire)
    endpoint = ecu.agent.endpoint(max_frame=1 << 16)
    endpoint.handler = mitm
    mitm.endpoint = lambda max_frame: endpoint  # type: ignore[attr-defined]
    ecu.served = serve_inprocess(serial, mitm, ecu.agent.limits)
    return mitm


def refused_in_cycle(backend: Backend, car: Vehicle, serial: str, attack: str) -> None:
    """The cycle names the ECU's refusal, nothing is installed, and the ECU's next report
    fails the assignment at the Director with that indicator."""
    result = car.cycle()
    assert serial in result.failed and attack in result.failed[serial], (result.failed, car.lines)
    assert car.installed(serial) is None
    car.cycle()
    state, reason = assignment_state(backend, serial)
    assert state == "failed" and attack in (reason or ""), (state, reason)


def _reordered(ct: bytes, chunk: int) -> bytes:
    head, size = 16, chunk + 16
    parts = [ct[i : i + size] for i in range(head, len(ct), size)]
    parts[0], parts[1] = parts[1], parts[0]
    return ct[:head] + b"".join(parts)


@pytest.mark.parametrize("how", ["another-ecu", "reordered", "cut"])
def test_4_3_the_ciphertext_changed_on_the_link_is_refused_by_the_secondary(
    tmp_path: Path, now: datetime, how: str
) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        release(backend)
        backend.director.assign(VIN, [("brk-1", NEW_PATH)], encrypt={"brk-1": True})
        entry = director_entry(backend, NEW_PATH)
        sealed = backend.director.ciphertexts.ensure(entry)
        ct = backend.director.ciphertexts.path(sealed.filename).read_bytes()  # type: ignore[union-attr]
        if how == "another-ecu":  # the same image sealed for another ECU
            plain = TargetFile.from_data(NEW_PATH, NEW, ("sha256", "sha512"))
            other = {"brk-9": EncryptionPrivateKey.generate().public_key()}
            wire, _ = encrypt_image(plain, NEW, other)
        elif how == "reordered":
            wire = _reordered(ct, 64 * 1024)
        else:
            wire = ct[:20_000] + ct[20_007:] + b"\0" * 7
        assert len(wire) == len(ct)
        on_the_link(car, "brk-1", wire)
        refused_in_cycle(backend, car, "brk-1", "arbitrary-software")


def test_5_4_1_a_stale_key_in_the_inventory_is_a_key_mismatch(
    tmp_path: Path, now: datetime
) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        release(backend)
        stale = EncryptionPrivateKey.generate().public_key()  # the ECU was re-provisioned
        backend.director.set_encryption_key(VIN, "brk-1", stale)
        backend.director.assign(VIN, [("brk-1", NEW_PATH)], encrypt={"brk-1": True})
        refused_in_cycle(backend, car, "brk-1", "encryption-key-mismatch")
        assert_no_marker(car)


def _sign_instead(backend: Backend, tf: TargetFile) -> None:
    """A compromised Director: ``tf`` signed as the vehicle's targets with its keys."""
    d = backend.director
    with d.engine.begin() as conn:
        vid = d.fleet.vehicle_id(conn, VIN)
        d.publisher.publish(conn, vid, VIN, backend.clock(), new_targets=[tf])


def test_4_3_a_swapped_wrapped_key_signed_by_the_director_is_refused(
    tmp_path: Path, now: datetime
) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries=TWO) as (backend, car):
        release(backend)
        backend.director.assign(VIN, [("brk-1", NEW_PATH)], encrypt={"brk-1": True})
        entry = director_entry(backend, NEW_PATH)
        assert entry.encrypted is not None
        key = backend.director.ciphertexts.ensure(entry).content_key
        mine = car.encryption_keys["brk-1"].public_key()
        # wrapped to brk-1's key, but for another ECU's slot: moved into brk-1's place
        swapped = wrap_key(key, mine, "tcu-1", entry)
        entry.encrypted.wrapped_keys["brk-1"] = swapped
        _sign_instead(backend, entry)
        refused_in_cycle(backend, car, "brk-1", "arbitrary-software")


def test_5_4_3_4_a_delta_for_another_base_is_refused(tmp_path: Path, now: datetime) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BASE_PATH)])
        car.cycle()
        car.cycle()
        other = IMAGES["brakes/fw-3.bin"][0]
        delta = release(backend, delta_from=("brakes/fw-3.bin", other))  # not what brk-1 runs
        assert delta is not None
        backend.director.assign(VIN, [("brk-1", NEW_PATH)])
        assert (
            NEW_PATH
            in decode(
                backend.director.metadata_file(VIN, "targets.json"), Limits.primary(), encoding=JSON
            ).signed.targets
        )  # the Director itself sends the full image
        view = backend.director.image_view
        tf = view.find(delta, "brk-v1")
        assert tf is not None
        tf.ecu_ids = {"brk-1": "brk-v1"}
        _sign_instead(backend, tf)  # a Director that sends it anyway
        result = car.cycle()
        assert "delta-base-mismatch" in result.failed.get("brk-1", ""), result.failed
        state = PrimaryState(car.config.storage_dir, car.config.limits).load_cycle()
        assert "brk-1" not in state.installed or state.installed["brk-1"].path == BASE_PATH
        installed_ok(car, "brk-1", BASE_PATH, BASE)


# --- the Primary's own image ------------------------------------------------------------------


def test_5_4_3_4_the_primary_installs_an_image_encrypted_for_it(
    tmp_path: Path, now: datetime
) -> None:
    from cycle_support import PRIMARY_ID

    from primary.cli import provision
    from primary.config import load_config
    from primary.own import OwnSlots, load_encryption_key

    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        # [primary] encryption_key: provisioning makes it; its public half is registered
        text = car.config_path.read_text().replace(
            'key_file = "keys/primary.pem"\n',
            'key_file = "keys/primary.pem"\nencryption_key = "keys/encryption.pem"\n',
        )
        car.config_path.write_text(text)
        car.config = load_config(car.config_path)
        provision(car.config, backend.director_root(), backend.image_root(), force=True)
        key = load_encryption_key(car.config)
        assert key is not None
        assert (car.config_path.parent / "keys" / "encryption.pem").stat().st_mode & 0o077 == 0
        backend.director.set_encryption_key(VIN, PRIMARY_ID, key.public_key())
        gw, data = "gw/gw-2.bin", IMAGES["gw/gw-2.bin"][0]
        backend.director.assign(VIN, [(PRIMARY_ID, gw)], encrypt={PRIMARY_ID: True})
        assert director_entry(backend, gw).encrypted is not None
        result = car.cycle()
        assert result.installed == {PRIMARY_ID: gw}, "\n".join(car.lines)
        assert car.config.flash_dir is not None
        own = OwnSlots(car.config.flash_dir, car.config.slot_size, car.config.limits)
        st = own.open().status()
        assert st.installed is not None and st.installed.filename == gw
        assert own.open().flash.read(st.active, 0, len(data)) == data
        assert not asked(backend.image_proxy, "gw-2.bin")  # the ciphertext, from the Director


def test_5_4_3_4_the_primarys_own_slots_apply_a_delta(tmp_path: Path) -> None:
    from primary.own import OwnSlots
    from uptane.delta import create_delta, delta_target

    own = OwnSlots(tmp_path / "flash", 512 * 1024, Limits.primary(), ecu_id="gw-1")
    base = TargetFile.from_data(BASE_PATH, BASE, ("sha256", "sha512"))
    (tmp_path / "base").write_bytes(BASE)
    slots, runs = own.holds(base)
    assert not runs
    own.install(slots, base, tmp_path / "base")
    full = TargetFile.from_data(NEW_PATH, NEW, ("sha256", "sha512"))
    delta = delta_target(f"{NEW_PATH}.patch", create_delta(BASE, NEW), base, full)
    (tmp_path / "patch").write_bytes(create_delta(BASE, NEW))
    slots, runs = own.holds(delta)
    assert not runs
    own.install(slots, delta, tmp_path / "patch")
    slots, runs = own.holds(delta)
    assert runs  # the delta's full image runs: nothing more to install
    st = slots.status()
    assert st.installed is not None and st.installed.filename == NEW_PATH
    assert slots.flash.read(st.active, 0, len(NEW)) == NEW
