"""The Director's lifecycle tables (director/lifecycle.py): every allowed move works, every
other move raises the named error, and the tables are the documented ones."""

from __future__ import annotations

import pytest

from director.common import Conflict
from director.lifecycle import (
    ASSIGNED,
    ASSIGNMENT,
    BUNDLE,
    CAMPAIGN,
    CANCEL,
    CANCELLED,
    COMPLETED,
    CONFIRM,
    CREATING,
    EXPIRE,
    FAIL,
    FAILED,
    FINISH,
    HALT,
    HALTED,
    IN_FLIGHT,
    INSTALLED,
    LAUNCH,
    LAUNCHING,
    LIFECYCLES,
    MEMBER,
    PAUSE,
    PAUSED,
    PENDING,
    RECORDED,
    RESUME,
    RUNNING,
    SEND,
    SENT,
    SKIP,
    SKIPPED,
    WAITING,
    WITHDRAW,
    IllegalTransition,
    Lifecycle,
)


@pytest.mark.parametrize("lc", list(LIFECYCLES.values()), ids=list(LIFECYCLES))
def test_every_move_of_the_table_works_and_every_other_raises(lc: Lifecycle):
    allowed = 0
    for state in lc.states:
        for event in lc.events:
            target = lc.moves[state].get(event)
            if target is not None:
                allowed += 1
                assert lc.allows(state, event)
                assert lc.next(state, event) == target
                assert state in lc.sources(event)
                continue
            assert not lc.allows(state, event)
            assert state not in lc.sources(event)
            with pytest.raises(IllegalTransition) as err:
                lc.next(state, event, subject=f"{lc.name} 7")
            e = err.value
            assert isinstance(e, Conflict)  # HTTP 409, never 500
            assert (e.lifecycle, e.state, e.event) == (lc.name, state, event)
            # the message names the record and its state, and says what to do
            assert str(e).startswith(f"{lc.name} 7 is {state}: ")
            assert lc.advice[event] in str(e)
    assert allowed == sum(len(out) for out in lc.moves.values())
    assert lc.initial in lc.states and not lc.allows(lc.initial, "no-such-event")


def _moves(lc: Lifecycle) -> set[tuple[str, str, str]]:
    return {(s, e, t) for s, out in lc.moves.items() for e, t in out.items()}


def test_the_assignment_and_bundle_tables_are_the_documented_ones():
    assert ASSIGNMENT.initial == PENDING
    assert _moves(ASSIGNMENT) == {
        (PENDING, SEND, IN_FLIGHT),
        (PENDING, CANCEL, CANCELLED),
        (IN_FLIGHT, CONFIRM, INSTALLED),
        (IN_FLIGHT, FAIL, FAILED),
        (IN_FLIGHT, EXPIRE, FAILED),  # unreachable past the deadline
        (IN_FLIGHT, WITHDRAW, CANCELLED),  # its campaign was cancelled
    }
    assert ASSIGNMENT.final == {INSTALLED, FAILED, CANCELLED}
    assert BUNDLE.initial == IN_FLIGHT
    assert _moves(BUNDLE) == {
        (IN_FLIGHT, CONFIRM, INSTALLED),
        (IN_FLIGHT, FAIL, FAILED),
        (IN_FLIGHT, CANCEL, CANCELLED),
    }
    assert BUNDLE.final == {INSTALLED, FAILED, CANCELLED}


def test_the_campaign_and_member_tables_are_the_documented_ones():
    assert CAMPAIGN.initial == CREATING
    assert _moves(CAMPAIGN) == {
        # created and sent in batches (issue 20): a half-done one is finished by the tick
        (CREATING, RECORDED, LAUNCHING),
        (CREATING, CANCEL, CANCELLED),
        (LAUNCHING, SENT, RUNNING),
        (LAUNCHING, CANCEL, CANCELLED),
        (RUNNING, LAUNCH, LAUNCHING),
        (RUNNING, PAUSE, PAUSED),
        (RUNNING, HALT, HALTED),
        (RUNNING, FINISH, COMPLETED),
        (RUNNING, CANCEL, CANCELLED),
        (PAUSED, RESUME, RUNNING),
        (PAUSED, CANCEL, CANCELLED),
        (HALTED, RESUME, RUNNING),
        (HALTED, CANCEL, CANCELLED),
    }
    assert CAMPAIGN.final == {COMPLETED, CANCELLED}
    assert MEMBER.initial == WAITING
    assert _moves(MEMBER) == {
        (WAITING, LAUNCH, ASSIGNED),
        (WAITING, SKIP, SKIPPED),
        (WAITING, CANCEL, CANCELLED),
    }
    assert set(LIFECYCLES) == {"assignment", "bundle", "campaign", "campaign member"}


def test_an_unknown_stored_state_is_an_illegal_move_and_an_unknown_event_a_bug():
    with pytest.raises(IllegalTransition, match="unknown state 'paused'"):
        ASSIGNMENT.next("paused", CANCEL, subject="assignment 3")
    with pytest.raises(ValueError, match="unknown event"):
        ASSIGNMENT.next(PENDING, "pause")


def test_a_table_with_a_move_to_nowhere_or_an_event_without_advice_is_refused():
    with pytest.raises(ValueError, match="unknown 'gone'"):
        Lifecycle("campaign", "a", {"a": {"go": "gone"}}, {"go": "x"})
    with pytest.raises(ValueError, match="no advice"):
        Lifecycle("campaign", "a", {"a": {"go": "b"}, "b": {}}, {})
    with pytest.raises(ValueError, match="initial state"):
        Lifecycle("campaign", "z", {"a": {}}, {})
