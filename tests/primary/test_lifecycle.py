"""The per-ECU pending update's lifecycle table (:mod:`primary.lifecycle`), walked whole:
every allowed move lands where the table says, every other move raises
:class:`~primary.lifecycle.IllegalTransition` and leaves the update where it was."""

from __future__ import annotations

import itertools

import pytest

from primary.lifecycle import (
    OPEN,
    TRANSITIONS,
    Event,
    IllegalTransition,
    Step,
    advance,
    next_step,
)
from primary.state import Pending
from uptane.metadata import TargetFile

IMAGE = TargetFile("brakes/fw-2.bin", 3, {"sha256": "ab" * 32})


def pending(step: Step) -> Pending:
    return Pending("brk-1", IMAGE, step)


def test_the_table_names_every_state_and_only_known_moves():
    assert set(TRANSITIONS) == set(Step)
    for moves in TRANSITIONS.values():
        assert set(moves) <= set(Event) and set(moves.values()) <= set(Step)
    assert {Step.APPROVED, Step.DOWNLOADED, Step.SENT} == OPEN
    # the two final states are reachable, and nothing leaves them
    reached = {s for moves in TRANSITIONS.values() for s in moves.values()}
    assert {Step.INSTALLED, Step.FAILED} <= reached
    assert TRANSITIONS[Step.INSTALLED] == {} and TRANSITIONS[Step.FAILED] == {}


@pytest.mark.parametrize(("step", "event"), list(itertools.product(Step, Event)))
def test_every_move_of_the_table_and_no_other(step: Step, event: Event):
    p = pending(step)
    allowed = TRANSITIONS[step].get(event)
    if allowed is not None:
        assert advance(p, event) is allowed and p.step is allowed
        assert next_step(step, event) is allowed
    else:
        with pytest.raises(IllegalTransition) as e:
            advance(p, event)
        assert p.step is step  # an illegal move changes nothing
        assert (e.value.ecu_id, e.value.step, e.value.event) == ("brk-1", step, event)
        assert repr(step.value) in str(e.value) and repr(event.value) in str(e.value)


def test_the_happy_path_and_its_stored_form():
    p = pending(Step.APPROVED)
    for event, stored in [
        (Event.DOWNLOADED, "downloaded"),
        (Event.SENT, "sent"),
        (Event.SENT, "sent"),  # sent again after a restart that found it not installed
        (Event.INSTALLED, "installed"),
    ]:
        advance(p, event)
        assert p.to_dict()["step"] == stored
