"""A partial-verification Secondary keeps verified Director targets in its store, not in
RAM (bench figure 3b): targets naming a new image go to ``pending-targets`` as soon as they
verify and move into the trusted record at install; RAM keeps the rollback floor. A
pending record that changed on flash is never trusted, and nothing is installed."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_agent_support import (
    Director,
    client_for,
    image_bytes,
    later,
    open_agent,
    provision_ecu,
    snapshot,
)

from secondary.agent import PENDING_TARGETS, TRANSFER, SecondaryAgent
from secondary.config import SecondaryConfig
from secondary.verification import PartialVerification
from uptane.errors import MalformedInput, RollbackAttack
from uptane.metadata import DER

V1 = image_bytes("pending-v1", 9_000)
V2 = image_bytes("pending-v2", 40_000)


def send(agent: SecondaryAgent, director: Director, image: bytes, path: str, days: int) -> None:
    with client_for(agent) as link:
        link.put_time(int(later(days).timestamp()))
        link.put_metadata("targets", DER, director.targets)
        link.put_image(path, image, len(image))


def test_5_4_4_1_partial_targets_live_in_the_store_not_in_ram(tmp_path: Path) -> None:
    director = Director()
    cfg = provision_ecu(tmp_path, director)
    agent = open_agent(cfg, checkpoint_bytes=8192)
    director.assign(V2, "fw/v2.bin", release_counter=1)
    send(agent, director, V2, "fw/v2.bin", days=1)
    # verified, not installed: the bytes are the pending record, RAM has the floor only
    assert agent.store.read(PENDING_TARGETS) == director.targets
    assert agent.trusted_targets is None
    assert isinstance(agent.verification, PartialVerification)
    pv = agent.verification.verifier
    assert pv is not None and "targets" not in pv.raw
    assert pv.targets is None  # the floor moves with the image
    record = agent.store.read(TRANSFER)
    assert record is not None and director.targets not in record  # not embedded twice
    with client_for(agent) as link:
        link.install("fw/v2.bin")
    # installed: trusted (store), and RAM holds this ECU's entry and the version only
    assert agent.trusted_targets == director.targets
    assert "targets" not in agent._trusted["director"] and "targets" not in pv.raw
    assert pv.targets is not None and list(pv.targets.signed.targets) == ["fw/v2.bin"]
    assert pv.targets.signed.version == director.builder.targets.version
    # and a reboot rebuilds the same floor from the store
    again = open_agent(SecondaryConfig.load(cfg.path))
    assert isinstance(again.verification, PartialVerification)
    assert again.verification.verifier.targets == pv.targets
    assert again.trusted_targets == director.targets


def test_5_4_4_1_rollback_floor_from_the_store_still_refuses_older_targets(
    tmp_path: Path,
) -> None:
    director = Director()
    cfg = provision_ecu(tmp_path, director)
    agent = open_agent(cfg)
    director.assign(V1, "fw/v1.bin", release_counter=1)
    old = director.targets
    send(agent, director, V1, "fw/v1.bin", days=1)
    with client_for(agent) as link:
        link.install("fw/v1.bin")
    director.assign(V2, "fw/v2.bin", release_counter=2)
    send(agent, director, V2, "fw/v2.bin", days=2)
    with client_for(agent) as link:
        link.install("fw/v2.bin")
    again = open_agent(SecondaryConfig.load(cfg.path))
    before = snapshot(again)
    with client_for(again) as link, pytest.raises(RollbackAttack):
        link.put_metadata("targets", DER, old)
    assert snapshot(again) == before


def test_pending_targets_changed_on_flash_are_never_trusted(tmp_path: Path) -> None:
    director = Director()
    cfg = provision_ecu(tmp_path, director)
    agent = open_agent(cfg)
    director.assign(V1, "fw/v1.bin", release_counter=1)
    send(agent, director, V1, "fw/v1.bin", days=1)
    before = snapshot(agent)
    # another genuine file (a later version) swapped in under the pending record
    director.assign(V1, "fw/v1.bin", release_counter=1)
    agent.store.write(PENDING_TARGETS, director.targets)
    with client_for(agent) as link, pytest.raises(MalformedInput):
        link.install("fw/v1.bin")
    assert snapshot(agent) == before
    assert agent.trusted_targets is None and agent.slots.status().installed is None
