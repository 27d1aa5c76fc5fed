"""The lifecycle of one ECU's pending update on the Primary, as one table.

In the manner of h11's ``_state.py``: the states, the events, and :data:`TRANSITIONS`,
the only moves there are. The stages of the cycle (:mod:`primary.download`,
:mod:`primary.deliver`) never assign a step: they report an event through
:func:`advance`, which looks the move up here and raises :class:`IllegalTransition` for
any other (a bug in the Primary, never a peer's doing).

::

    APPROVED --downloaded--> DOWNLOADED --sent--> SENT --installed--> INSTALLED
                                 |  \\                |  \\
                                 |   installed        |   refused --> FAILED
                                 |   (the ECU already |
                                 |    ran it)         sent (again, after a restart
                                 refused --> FAILED         that found it not installed)

INSTALLED and FAILED are final: the update leaves ``pending`` and its outcome goes to the
cycle record's ``results`` (:class:`Outcome`). The stored form of a step is its value, the
same strings earlier versions wrote (``"approved"``, ``"downloaded"``, ``"sent"``), so a
record written by an older Primary loads unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol


class Step(StrEnum):
    """Where one ECU's pending update is."""

    #: verified and approved by this cycle's full verification; the image is not here yet
    APPROVED = "approved"
    #: the image is in the Primary's storage, its length and every hash checked
    DOWNLOADED = "downloaded"
    #: the metadata and the whole image are on the ECU; INSTALL not answered yet
    SENT = "sent"
    #: the ECU runs the image (final: the update leaves ``pending``)
    INSTALLED = "installed"
    #: the ECU refused the metadata or the image (final: the update leaves ``pending``)
    FAILED = "failed"


class Event(StrEnum):
    """What a stage saw happen to one ECU's update."""

    #: the image finished downloading, or was already here (length and hashes checked)
    DOWNLOADED = "downloaded"
    #: the metadata and the image went to the ECU over its link (or into the own slot)
    SENT = "sent"
    #: INSTALL was answered, or the ECU's status or slots show it runs the image
    INSTALLED = "installed"
    #: the ECU (or the Primary's own slots) refused the metadata or the image
    REFUSED = "refused"


#: the allowed moves: state -> event -> next state; nothing else is allowed
TRANSITIONS: Mapping[Step, Mapping[Event, Step]] = {
    Step.APPROVED: {Event.DOWNLOADED: Step.DOWNLOADED},
    Step.DOWNLOADED: {
        Event.SENT: Step.SENT,
        Event.INSTALLED: Step.INSTALLED,
        Event.REFUSED: Step.FAILED,
    },
    Step.SENT: {
        Event.SENT: Step.SENT,
        Event.INSTALLED: Step.INSTALLED,
        Event.REFUSED: Step.FAILED,
    },
    Step.INSTALLED: {},
    Step.FAILED: {},
}

#: the states in which an update is still pending (kept in the cycle record)
OPEN = frozenset(s for s, moves in TRANSITIONS.items() if moves)


class Outcome(StrEnum):
    """The last outcome for one ECU, kept in the cycle record's ``results`` (for status
    displays and the refusal count; not a state: a later cycle replaces it)."""

    #: an image transfer to the ECU has started (``results[ECU]["sending"]`` names it)
    SENDING = "sending"
    INSTALLED = "installed"
    FAILED = "failed"
    #: the ECU did not answer this cycle; its update waits at the step it reached
    UNREACHABLE = "unreachable"


class IllegalTransition(RuntimeError):
    """A stage reported an event that the update's current step does not allow."""

    def __init__(self, ecu_id: str, step: Step, event: Event) -> None:
        allowed = ", ".join(TRANSITIONS[step]) or "none (final)"
        super().__init__(
            f"{ecu_id}: event {event.value!r} is not allowed at step {step.value!r} "
            f"(allowed: {allowed})"
        )
        self.ecu_id = ecu_id
        self.step = step
        self.event = event


class HasStep(Protocol):
    ecu_id: str
    step: Step


def next_step(step: Step, event: Event, ecu_id: str = "?") -> Step:
    """The step after ``event`` at ``step``; raises IllegalTransition if not allowed."""
    try:
        return TRANSITIONS[step][event]
    except KeyError:
        raise IllegalTransition(ecu_id, step, event) from None


def advance(pending: HasStep, event: Event) -> Step:
    """Move ``pending`` on by ``event`` (checked against :data:`TRANSITIONS`)."""
    pending.step = next_step(pending.step, event, pending.ecu_id)
    return pending.step


__all__ = [
    "OPEN",
    "TRANSITIONS",
    "Event",
    "HasStep",
    "IllegalTransition",
    "Outcome",
    "Step",
    "advance",
    "next_step",
]
