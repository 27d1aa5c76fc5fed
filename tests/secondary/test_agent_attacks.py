"""Attacks on a partial-verification Secondary, through the real link endpoint. Each test
asserts the error that names the attack (its code crossed the link as an ERROR message),
that nothing was installed (the running image, its bytes, the active slot and the trusted
metadata are unchanged), and that the next version report carries the attack indicator."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from test_agent_support import (
    ECU,
    HW,
    NOW,
    VIN,
    Director,
    client_for,
    image_bytes,
    later,
    open_agent,
    provision_ecu,
    snapshot,
)

from hardware.client import LinkClient
from secondary.agent import SecondaryAgent
from uptane.errors import (
    BadEcuId,
    BadHardwareId,
    BadHash,
    EndlessDataAttack,
    ExpiredMetadata,
    FreezeAttack,
    RollbackAttack,
    ThresholdNotMet,
    UptaneError,
    VehicleMismatch,
)
from uptane.limits import PRIMARY, Limits
from uptane.manifest import decode_report
from uptane.metadata import DER, Metadata, TargetFile, decode

V1 = image_bytes("v1", 9_000)


class Ecu:
    """A provisioned Secondary running V1 (release counter 5), its Director and a client."""

    def __init__(self, tmp: Path, director: Director | None = None) -> None:
        self.director = director or Director()
        self.agent: SecondaryAgent = open_agent(provision_ecu(tmp, self.director))
        self.client: LinkClient = client_for(self.agent)
        self.v1_targets = self.send_update(V1, "fw/v1.bin", release_counter=5)
        self.client.install("fw/v1.bin")
        assert self.agent.slots.status().installed.filename == "fw/v1.bin"

    def send_update(self, image: bytes, path: str, **kw: Any) -> bytes:
        self.director.assign(image, path, **kw)
        self.client.put_time(int(later(1).timestamp()))
        self.client.put_metadata("targets", DER, self.director.targets)
        self.client.put_image(path, image, len(image))
        return self.director.targets

    def report_attack(self) -> str | None:
        return decode_report(self.agent.report(b"nonce"), PRIMARY, DER).signed.attack


@pytest.fixture
def ecu(tmp_path: Path) -> Ecu:
    return Ecu(tmp_path)


def refused(ecu: Ecu, cls: type[UptaneError], action) -> UptaneError:
    """Run ``action``; require the named error, nothing installed, and the indicator."""
    before = snapshot(ecu.agent)
    with pytest.raises(cls) as info:
        action()
    err = info.value
    assert type(err).code == cls.code, f"got {type(err).__name__}, expected {cls.__name__}"
    assert snapshot(ecu.agent) == before
    # and after a reboot too: nothing of the attack reached the running state
    again = SecondaryAgent.from_config(ecu_config(ecu))
    again.start()
    assert snapshot(again) == before
    indicator = ecu.report_attack()
    assert indicator is not None and indicator.startswith(cls.attack + ":")
    assert ecu.agent.status().attack == cls.code
    return err


def ecu_config(ecu: Ecu):
    from secondary.config import SecondaryConfig

    return SecondaryConfig.load(ecu.agent.flash.directory.parent / "secondary.toml")


def test_5_4_4_6_metadata_version_rollback_is_refused(ecu: Ecu) -> None:
    old = ecu.v1_targets
    v2 = image_bytes("v2", 7_000)
    ecu.send_update(v2, "fw/v2.bin", release_counter=6)
    ecu.client.install("fw/v2.bin")
    refused(ecu, RollbackAttack, lambda: ecu.client.put_metadata("targets", DER, old))


def test_5_4_3_4_release_counter_rollback_is_refused(ecu: Ecu) -> None:
    old_image = image_bytes("v0", 8_000)
    ecu.director.assign(old_image, "fw/v0.bin", release_counter=4)
    refused(
        ecu, RollbackAttack, lambda: ecu.client.put_metadata("targets", DER, ecu.director.targets)
    )
    # and the image it names cannot be sent either
    with pytest.raises(UptaneError):
        ecu.client.put_image("fw/v0.bin", old_image, len(old_image))
    assert ecu.agent.slots.status().installed.filename == "fw/v1.bin"


def test_4_3_freeze_expired_targets_against_the_time_given(ecu: Ecu) -> None:
    v2 = image_bytes("v2", 7_000)
    ecu.director.assign(v2, "fw/v2.bin", release_counter=6)
    # the Director's targets expire after 90 days; the Primary's time says 200 days
    ecu.client.put_time(int(later(200).timestamp()))
    err = refused(
        ecu, ExpiredMetadata, lambda: ecu.client.put_metadata("targets", DER, ecu.director.targets)
    )
    assert isinstance(err, FreezeAttack)


def test_5_2_3_1_targets_for_another_vehicle_are_a_replay(tmp_path: Path) -> None:
    ecu = Ecu(tmp_path)
    other = copy.deepcopy(ecu.director.builder.targets)
    other.vehicle_id = "VIN-SOMEONE-ELSE"
    other.version += 10
    md: Metadata[Any] = Metadata(other, encoding=DER)
    md.sign(ecu.director.keys["targets"][0])
    refused(ecu, VehicleMismatch, lambda: ecu.client.put_metadata("targets", DER, md.to_bytes()))
    assert other.vehicle_id != VIN


def test_5_4_3_4_image_for_another_ecu_is_refused(ecu: Ecu) -> None:
    theirs = image_bytes("theirs", 6_000)
    ecu.director.assign(theirs, "fw/theirs.bin", ecu="ecu-other", hw=HW, release_counter=9)
    ecu.client.put_time(int(later(1).timestamp()))
    ecu.client.put_metadata("targets", DER, ecu.director.targets)
    refused(ecu, BadEcuId, lambda: ecu.client.put_image("fw/theirs.bin", theirs, len(theirs)))


def test_5_4_3_4_image_for_other_hardware_is_refused(ecu: Ecu) -> None:
    v2 = image_bytes("v2-wrong-hw", 6_000)
    ecu.director.assign(v2, "fw/v2.bin", hw="hw-engine-3", release_counter=6)
    refused(
        ecu, BadHardwareId, lambda: ecu.client.put_metadata("targets", DER, ecu.director.targets)
    )


def test_4_3_endless_data_image_longer_than_signed_is_refused(ecu: Ecu) -> None:
    v2 = image_bytes("v2", 7_000)
    ecu.director.assign(v2, "fw/v2.bin", release_counter=6)
    ecu.client.put_time(int(later(1).timestamp()))
    ecu.client.put_metadata("targets", DER, ecu.director.targets)
    longer = v2 + b"\x00" * 5_000
    refused(ecu, EndlessDataAttack, lambda: ecu.client.put_image("fw/v2.bin", longer, len(longer)))


def test_5_4_3_4_wrong_hash_is_refused_at_install(ecu: Ecu) -> None:
    v2 = image_bytes("v2", 7_000)
    ecu.director.assign(v2, "fw/v2.bin", release_counter=6)
    ecu.client.put_time(int(later(1).timestamp()))
    ecu.client.put_metadata("targets", DER, ecu.director.targets)
    evil = bytearray(v2)
    evil[3_000] ^= 0x01
    ecu.client.put_image("fw/v2.bin", bytes(evil), len(evil))
    refused(ecu, BadHash, lambda: ecu.client.install("fw/v2.bin"))
    # the ECU stays updatable: the genuine image installs next
    ecu.client.put_metadata("targets", DER, ecu.director.targets)
    ecu.client.put_image("fw/v2.bin", v2, len(v2))
    assert ecu.client.install("fw/v2.bin").installed == "fw/v2.bin"
    assert ecu.report_attack() is None


def test_5_4_4_6_threshold_not_met_is_refused(tmp_path: Path) -> None:
    ecu = Ecu(tmp_path, Director(targets_keys=2, threshold=2))
    v2 = image_bytes("v2", 7_000)
    ecu.director.assign(v2, "fw/v2.bin", release_counter=6)
    md = decode(ecu.director.targets, PRIMARY, encoding=DER, role_type="targets")
    md.signatures = md.signatures[:1]
    one_signature = md.to_bytes(DER)
    refused(ecu, ThresholdNotMet, lambda: ecu.client.put_metadata("targets", DER, one_signature))


def test_4_3_arbitrary_software_targets_signed_by_an_attacker_are_refused(ecu: Ecu) -> None:
    from uptane.keys import PrivateKey

    evil = image_bytes("evil", 7_000)
    forged = copy.deepcopy(ecu.director.builder.targets)
    forged.version += 1
    forged.targets = {
        "fw/evil.bin": TargetFile.from_data(
            "fw/evil.bin", evil, hardware_ids=[HW], release_counter=99, ecu_ids={ECU: HW}
        )
    }
    md: Metadata[Any] = Metadata(forged, encoding=DER)
    md.sign(PrivateKey.generate())
    refused(ecu, ThresholdNotMet, lambda: ecu.client.put_metadata("targets", DER, md.to_bytes()))
    with pytest.raises(UptaneError):
        ecu.client.put_image("fw/evil.bin", evil, len(evil))


def test_4_3_oversize_metadata_is_refused_before_it_is_buffered(ecu: Ecu) -> None:
    cap = Limits.constrained().bytes_for_role("targets")
    huge = b"\x30" + b"\x00" * cap
    refused(ecu, EndlessDataAttack, lambda: ecu.client.put_metadata("targets", DER, huge))


def test_5_4_3_4_image_not_named_by_the_director_is_refused(ecu: Ecu) -> None:
    from uptane.errors import TargetNotFound

    stray = image_bytes("stray", 3_000)
    refused(ecu, TargetNotFound, lambda: ecu.client.put_image("fw/stray.bin", stray, len(stray)))


def test_an_attack_does_not_stop_a_later_genuine_update(ecu: Ecu) -> None:
    ecu.director.assign(image_bytes("v0", 100), "fw/v0.bin", release_counter=1)
    with pytest.raises(RollbackAttack):
        ecu.client.put_metadata("targets", DER, ecu.director.targets)
    assert ecu.report_attack().startswith("rollback:")
    v3 = image_bytes("v3", 11_000)
    ecu.send_update(v3, "fw/v3.bin", release_counter=7)
    assert ecu.client.install("fw/v3.bin").installed == "fw/v3.bin"
    assert ecu.report_attack() is None
    assert ecu.agent.latest_time > NOW
    assert ecu.agent.ecu_serial == ECU


def test_garbage_and_mutated_metadata_raise_only_named_errors(ecu: Ecu) -> None:
    import random

    rng = random.Random(5)
    genuine = ecu.director.targets
    before = snapshot(ecu.agent)
    for i in range(60):
        if i % 2:
            data = bytearray(genuine)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            blob = bytes(data)
        else:
            blob = rng.randbytes(rng.randrange(1, 600))
        if blob == genuine:
            continue
        with pytest.raises(UptaneError):
            ecu.agent.put_metadata("director", "targets", DER, blob)
        assert snapshot(ecu.agent) == before
