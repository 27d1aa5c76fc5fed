"""Attack matrix at a partial-verification Secondary (§4.3), the rows
``tests/secondary/test_agent_attacks.py`` does not already cover. The real agent (file
flash, A/B slots, its own key) is driven through its link endpoint by the real
:class:`hardware.client.LinkClient`, as the Primary drives it. Each test asserts the named
error (its code crossed the link) and that nothing was installed: the running image, its
bytes, the active slot and the trusted metadata are unchanged, also after a reboot
(``refused`` from the agent attack suite). ``docs/security.md`` maps every row."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from test_agent_attacks import Ecu, ecu_config, refused
from test_agent_support import (
    ECU,
    HW,
    Director,
    client_for,
    image_bytes,
    later,
    provision_ecu,
    snapshot,
)

from secondary.agent import SecondaryAgent
from uptane.errors import (
    BadHash,
    BadLength,
    DirectorDelegation,
    EndlessDataAttack,
    ExpiredMetadata,
    PartialBundleAttack,
    RepeatedEcuId,
    ReplayAttack,
    TargetNotFound,
    ThresholdNotMet,
    UptaneError,
)
from uptane.keys import PrivateKey
from uptane.limits import PRIMARY, Limits
from uptane.manifest import check_report, decode_report
from uptane.metadata import DER, DelegatedRole, Delegations, Metadata, TargetFile

V2 = image_bytes("v2", 7_000)
V3 = image_bytes("v3", 7_000)


@pytest.fixture
def ecu(tmp_path: Path) -> Ecu:
    return Ecu(tmp_path)


def signed_targets(ecu: Ecu, change) -> bytes:
    """The Director's current targets, changed and re-signed with its real targets key (a
    compromised or buggy Director)."""
    t = copy.deepcopy(ecu.director.builder.targets)
    t.version += 1
    change(t)
    md: Metadata[Any] = Metadata(t, encoding=DER)
    md.sign(ecu.director.keys["targets"][0])
    return md.to_bytes()


def entry(path: str, data: bytes, ecu_id: str = ECU, rc: int = 6) -> TargetFile:
    return TargetFile.from_data(
        path,
        data,
        ("sha256", "sha512"),
        hardware_ids=[HW],
        release_counter=rc,
        ecu_ids={ecu_id: HW},
    )


def test_4_3_drop_request_image_never_completes_nothing_installed(ecu: Ecu) -> None:
    """The Primary (or a man in the middle on the link) stops the image half way: the
    INSTALL is refused, the old image runs; the rest resumes later."""
    ecu.director.assign(V2, "fw/v2.bin", release_counter=6)
    ecu.client.put_time(int(later(1).timestamp()))
    ecu.client.put_metadata("targets", DER, ecu.director.targets)
    with pytest.raises(BadLength):  # the sender's stream ends early
        ecu.client.put_image("fw/v2.bin", V2[:3_000], len(V2))
    before = snapshot(ecu.agent)
    with pytest.raises(BadLength):
        ecu.client.install("fw/v2.bin")
    assert snapshot(ecu.agent) == before
    ecu.client.put_image("fw/v2.bin", V2, len(V2))  # the genuine update still goes in
    assert ecu.client.install("fw/v2.bin").installed == "fw/v2.bin"


def test_4_3_freeze_replayed_empty_targets_of_an_older_cycle_expire(ecu: Ecu) -> None:
    """This ECU's own genuine empty Director targets, replayed to hide a new update: equal
    to what it trusts, so it changes nothing, and once expired it is named a freeze."""
    ecu.director.clear()
    empty = ecu.director.targets
    ecu.client.put_metadata("targets", DER, empty)
    ecu.director.assign(V2, "fw/v2.bin", release_counter=6)
    ecu.client.put_time(int(later(100).timestamp()))  # past the 90-day expiry
    refused(ecu, ExpiredMetadata, lambda: ecu.client.put_metadata("targets", DER, empty))


def test_4_3_partial_bundle_no_second_install_while_one_is_on_trial(tmp_path: Path) -> None:
    """An ECU whose update is still on trial (not yet confirmed) refuses another one: a
    bundle is finished or reverted before the next begins."""
    director = Director()
    agent = SecondaryAgent.from_config(provision_ecu(tmp_path, director))
    agent.auto_confirm = False
    agent.start()
    client = client_for(agent)
    for image, path, rc in ((V2, "fw/v2.bin", 6), (V3, "fw/v3.bin", 7)):
        director.assign(image, path, release_counter=rc)
        client.put_time(int(later(1).timestamp()))
        if path == "fw/v3.bin":
            before = snapshot(agent)
            with pytest.raises(PartialBundleAttack):
                client.put_metadata("targets", DER, director.targets)
                client.put_image(path, image, len(image))
                client.install(path)
            assert snapshot(agent) == before
        else:
            client.put_metadata("targets", DER, director.targets)
            client.put_image(path, image, len(image))
            client.install(path)
            assert agent.slots.status().trial is not None


def test_4_3_mix_and_match_genuine_image_of_another_release_is_refused(ecu: Ecu) -> None:
    """Genuine parts mixed: the Director's targets for release v2 with the (also genuine)
    bytes of release v3 under v2's name."""
    ecu.director.assign(V2, "fw/v2.bin", release_counter=6)
    ecu.client.put_time(int(later(1).timestamp()))
    ecu.client.put_metadata("targets", DER, ecu.director.targets)
    ecu.client.put_image("fw/v2.bin", V3, len(V3))
    refused(ecu, BadHash, lambda: ecu.client.install("fw/v2.bin"))


def test_4_3_mixed_bundles_image_of_a_later_bundle_is_refused(ecu: Ecu) -> None:
    """An image from another bundle than the one the trusted targets describe."""
    ecu.director.assign(V2, "fw/v2.bin", release_counter=6)
    ecu.client.put_time(int(later(1).timestamp()))
    ecu.client.put_metadata("targets", DER, ecu.director.targets)
    refused(ecu, TargetNotFound, lambda: ecu.client.put_image("fw/v3.bin", V3, len(V3)))


def test_5_4_4_6_director_that_delegates_is_refused(ecu: Ecu) -> None:
    def delegate(t: Any) -> None:
        k = PrivateKey.generate()
        t.delegations = Delegations(
            {k.key.keyid: k.key}, [DelegatedRole("x", [k.key.keyid], 1, paths=["*"])]
        )
        t.targets = {"fw/v2.bin": entry("fw/v2.bin", V2)}

    data = signed_targets(ecu, delegate)
    refused(ecu, DirectorDelegation, lambda: ecu.client.put_metadata("targets", DER, data))


def test_5_4_4_6_repeated_ecu_id_is_refused(ecu: Ecu) -> None:
    def twice(t: Any) -> None:
        t.targets = {"fw/v2.bin": entry("fw/v2.bin", V2), "fw/v3.bin": entry("fw/v3.bin", V3)}

    data = signed_targets(ecu, twice)
    refused(ecu, RepeatedEcuId, lambda: ecu.client.put_metadata("targets", DER, data))


def test_4_3_endless_data_oversize_root_is_refused(ecu: Ecu) -> None:
    cap = Limits.constrained().bytes_for_role("root")
    huge = b"\x30" + b"\x00" * cap
    refused(
        ecu,
        EndlessDataAttack,
        lambda: (
            ecu.client.put_metadata("root", DER, huge),
            ecu.client.put_metadata("targets", DER, ecu.director.targets),
        ),
    )


def test_4_3_replayed_version_report_is_detected_by_its_nonce(ecu: Ecu) -> None:
    """Each report signs the nonce it was asked with; an old report replayed in answer
    to a new nonce is named a replay (the Primary's check, §5.4.2.1.2)."""
    old = decode_report(ecu.agent.report(b"\x01" * 16), PRIMARY, DER)
    new = decode_report(ecu.client.get_report(b"\x02" * 16), PRIMARY, DER)
    key = PrivateKey.from_pem(ecu_config(ecu).key_file.read_bytes()).key
    check_report(new, key, expected_ecu_id=ECU, expected_nonce=b"\x02" * 16)
    with pytest.raises(ReplayAttack):
        check_report(old, key, expected_ecu_id=ECU, expected_nonce=b"\x02" * 16)


def test_4_3_fast_forward_recovery_after_director_key_rotation(ecu: Ecu) -> None:
    """The Director's targets key leaked: the attacker fast-forwards the ECU's trusted
    targets to a huge version (validly signed, so accepted). The OEM rotates the key
    (root v2); the ECU follows the rotation sent over the link, forgets the fast-forwarded
    targets and installs the genuine update with its ordinary version; targets signed by
    the revoked key are then refused."""
    leaked = ecu.director.keys["targets"][0]
    ahead = copy.deepcopy(ecu.director.builder.targets)
    ahead.version += 1_000_000
    md: Metadata[Any] = Metadata(ahead, encoding=DER)
    md.sign(leaked)
    ecu.client.put_metadata("targets", DER, md.to_bytes())  # the fast-forward lands
    assert ecu.agent.trusted_targets is not None

    fresh = PrivateKey.generate()
    ecu.director.builder.rotate_keys("targets", [fresh], revoke=[leaked.key.keyid])
    ecu.director.keys["targets"] = [fresh]
    ecu.director.assign(V2, "fw/v2.bin", release_counter=6)
    ecu.client.put_time(int(later(1).timestamp()))
    ecu.client.put_metadata("root", DER, ecu.director.builder.root_history[-1][DER])
    ecu.client.put_metadata("targets", DER, ecu.director.targets)  # recovery
    ecu.client.put_image("fw/v2.bin", V2, len(V2))
    assert ecu.client.install("fw/v2.bin").installed == "fw/v2.bin"

    t = copy.deepcopy(ecu.director.builder.targets)
    t.version += 2_000_000
    t.targets = {"fw/v3.bin": entry("fw/v3.bin", V3, rc=99)}
    md = Metadata(t, encoding=DER)
    md.sign(leaked)
    refused(ecu, ThresholdNotMet, lambda: ecu.client.put_metadata("targets", DER, md.to_bytes()))
    with pytest.raises(UptaneError):
        ecu.client.put_image("fw/v3.bin", V3, len(V3))


def test_5_4_4_3_partial_verifier_forgets_targets_when_the_targets_keys_rotate() -> None:
    """The core check behind the recovery above (uptane/partial.py): a root update that
    changes the targets keys drops the trusted targets, so an ordinary version verifies
    again; a root update that keeps them keeps the trusted targets (no rollback)."""
    from datetime import timedelta

    from test_agent_support import NOW, VIN

    from uptane.limits import CONSTRAINED
    from uptane.partial import PartialVerifier
    from uptane.repository import RepositoryBuilder

    keys = {r: [PrivateKey.generate()] for r in ("root", "targets", "snapshot", "timestamp")}
    b = RepositoryBuilder("director", dict(keys), NOW, vehicle_id=VIN, encodings=(DER,))
    pv = PartialVerifier(b.trusted_root(DER), ECU, HW, CONSTRAINED, encoding=DER, vehicle_id=VIN)
    ahead = copy.deepcopy(b.targets)
    ahead.version = 1_000_000
    md: Metadata[Any] = Metadata(ahead, encoding=DER)
    md.sign(keys["targets"][0])
    pv.verify(md.to_bytes(), NOW)
    # a root update that does not touch the targets keys: the fast-forward still holds
    b.rotate_keys("snapshot", [PrivateKey.generate()], revoke=[keys["snapshot"][0].key.keyid])
    b.publish(NOW)
    with pytest.raises(UptaneError):
        pv.verify(b.files[DER]["targets"], NOW, root_updates=[b.files[DER]["root"]])
    assert pv.targets is not None and pv.targets.signed.version == 1_000_000
    # the targets key rotated: recovered
    b.rotate_keys("targets", [PrivateKey.generate()], revoke=[keys["targets"][0].key.keyid])
    b.publish(NOW + timedelta(minutes=1))
    pv.verify(b.files[DER]["targets"], NOW, root_updates=[b.files[DER]["root"]])
    assert pv.targets is not None and pv.targets.signed.version < 1_000_000
