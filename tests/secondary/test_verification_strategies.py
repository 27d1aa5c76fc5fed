"""Partial (§5.4.4.1) and full (§5.4.4.2) verification are two strategies behind one
interface (secondary/verification.py): the agent asks the strategy the configuration
names, never the mode string."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_agent_support import Director, open_agent, provision_ecu, snapshot

from hardware.flash import Flash
from secondary.agent import SecondaryAgent
from secondary.config import MODES
from secondary.verification import (
    STRATEGIES,
    FullVerification,
    PartialVerification,
    strategy,
)
from storage import AtomicStore
from uptane.codec import DER, JSON, codec_for
from uptane.errors import MalformedInput
from uptane.keys import PrivateKey


def test_each_mode_names_one_strategy() -> None:
    assert set(MODES) == set(STRATEGIES) == {"partial", "full"}
    assert strategy("partial") is PartialVerification
    assert strategy("full") is FullVerification
    for name, cls in STRATEGIES.items():
        assert cls.mode == name
    assert not PartialVerification.needs_image_repository
    assert FullVerification.needs_image_repository
    with pytest.raises(ValueError, match="unknown verification mode"):
        strategy("both")


def test_the_agent_runs_the_configured_strategy(tmp_path: Path) -> None:
    director = Director()
    cfg = provision_ecu(tmp_path, director)
    agent = open_agent(cfg)
    assert isinstance(agent.verification, PartialVerification)
    assert agent.mode == agent.hello_info().mode == "partial"
    # a partial-verification ECU reads only the Director's files (§5.4.4.1)
    v = agent.verification
    assert v.wants("director", "targets") and v.wants("director", "root")
    assert not v.wants("image", "targets") and not v.wants("director", "map")


def _agent(tmp_path: Path, **kw: object) -> SecondaryAgent:
    director = Director()
    store = AtomicStore(tmp_path / "state")
    SecondaryAgent.provision_state(store, director.root)
    return SecondaryAgent(
        ecu_serial="e",
        hardware_id="h",
        key=PrivateKey.generate(),
        store=store,
        flash=Flash(tmp_path / "flash", 1 << 16),
        **kw,  # type: ignore[arg-type]
    )


def test_an_unknown_mode_or_full_without_a_vehicle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown verification mode"):
        _agent(tmp_path, mode="both")
    with pytest.raises(ValueError, match="vehicle id"):
        _agent(tmp_path, mode="full")
    assert isinstance(_agent(tmp_path, mode="partial").verification, PartialVerification)


def test_metadata_in_another_encoding_is_refused_through_the_codec(tmp_path: Path) -> None:
    """The ECU reads the one encoding it was provisioned with (uptane.codec): another
    codec's file, or a name no codec has, is MalformedInput and nothing changes."""
    director = Director()
    agent = open_agent(provision_ecu(tmp_path, director))
    assert agent.ecu.codec is codec_for(DER)
    before = snapshot(agent)
    for encoding in (JSON, "cbor"):
        with pytest.raises(MalformedInput, match=r"encoding|reads der metadata"):
            agent.put_metadata("director", "targets", encoding, director.targets)
    assert snapshot(agent) == before
    with pytest.raises(MalformedInput, match="unknown encoding"):
        _agent(tmp_path, encoding="cbor")
