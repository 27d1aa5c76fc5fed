"""The slot trial lifecycle of an A/B install: one table of states and allowed moves.

In the manner of h11's ``_state.py``: :class:`hardware.slots.SlotManager` asks
:func:`next_state` before it changes anything, so the rules live in :data:`TRANSITIONS`
and nowhere else. A move the table does not allow raises a named error
(:data:`REFUSALS`: a new install while one is pending is a §4.3 partial bundle, anything
else :class:`uptane.errors.IllegalSlotTransition`) and nothing changes.

States (:class:`SlotState`; the boot record persists only IDLE or TRIAL, through its
``trial`` field; the rest is RAM and ends at a reset):

==============  ==============================================================
IDLE            no install in progress, no trial pending: the active slot runs
INSTALLING      an image streams into the inactive slot (a reset ends it)
TRIAL           the boot record names a trial slot, not booted since the reset
TRIAL_BOOTED    the trial slot runs, its boot counted: it may be confirmed
==============  ==============================================================

Events (:class:`SlotEvent`) and the outcome each records as the last install result
(:class:`Outcome`, kept as the same strings in the boot record since the first format, so
records written by older code still load):

==============  =========================  ============================================
BEGIN, RESUME   IDLE -> INSTALLING         nothing recorded (the slot's info is cleared)
FINISH          INSTALLING -> TRIAL        ``trial`` (read back, verified, switched)
REJECT          INSTALLING -> IDLE         ``rejected`` (a check failed at finish)
ABORT           INSTALLING -> IDLE         ``aborted`` (the caller gave up)
TRIAL_BOOT      TRIAL -> TRIAL_BOOTED      attempts + 1, counted before the trial runs
REVERT          TRIAL -> IDLE              ``reverted`` (attempts used up, or the slot
                                           no longer matches its image)
CONFIRM         TRIAL_BOOTED -> IDLE       ``confirmed`` (the trial slot is the active one)
RESET           any -> IDLE or TRIAL       whatever the boot record holds
==============  =========================  ============================================

See docs/ab-install.md.
"""

from __future__ import annotations

from enum import Enum, StrEnum

from uptane.errors import IllegalSlotTransition, PartialBundleAttack, UptaneError


class SlotState(Enum):
    """Where an A/B install stands (see the module doc)."""

    IDLE = "idle"
    INSTALLING = "installing"
    TRIAL = "trial"
    TRIAL_BOOTED = "trial-booted"


class SlotEvent(Enum):
    """What the slot manager is asked to do (see the module doc)."""

    BEGIN = "begin"
    RESUME = "resume"
    FINISH = "finish"
    REJECT = "reject"
    ABORT = "abort"
    TRIAL_BOOT = "trial-boot"
    REVERT = "revert"
    CONFIRM = "confirm"
    RESET = "reset"


class Outcome(StrEnum):
    """The last install's outcome as the boot record keeps it (``data.last.outcome``)."""

    TRIAL = "trial"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    ABORTED = "aborted"
    REVERTED = "reverted"

    @property
    def ok(self) -> bool:
        """The image was installed: on trial, or confirmed."""
        return self in (Outcome.TRIAL, Outcome.CONFIRMED)


S, E = SlotState, SlotEvent

#: every allowed move: state -> event -> the state after it
TRANSITIONS: dict[SlotState, dict[SlotEvent, SlotState]] = {
    S.IDLE: {E.BEGIN: S.INSTALLING, E.RESUME: S.INSTALLING, E.RESET: S.IDLE},
    S.INSTALLING: {
        E.FINISH: S.TRIAL,
        E.REJECT: S.IDLE,
        E.ABORT: S.IDLE,
        E.RESET: S.IDLE,  # the partial image stays unclaimed in the inactive slot
    },
    S.TRIAL: {E.TRIAL_BOOT: S.TRIAL_BOOTED, E.REVERT: S.IDLE, E.RESET: S.TRIAL},
    S.TRIAL_BOOTED: {E.CONFIRM: S.IDLE, E.RESET: S.TRIAL},
}

#: the outcome each event records in the boot record (events not named record none)
OUTCOMES: dict[SlotEvent, Outcome] = {
    E.FINISH: Outcome.TRIAL,
    E.REJECT: Outcome.REJECTED,
    E.ABORT: Outcome.ABORTED,
    E.REVERT: Outcome.REVERTED,
    E.CONFIRM: Outcome.CONFIRMED,
}

#: the error an illegal move raises, when it is not IllegalSlotTransition: a new image
#: while an install or a trial is pending is a new bundle before the last one ended (§4.3)
REFUSALS: dict[SlotEvent, type[UptaneError]] = {
    E.BEGIN: PartialBundleAttack,
    E.RESUME: PartialBundleAttack,
}

#: why a move is refused, for the error message: by state for a new install, else by event
_BUSY = {
    S.INSTALLING: "an install is already in progress",
    S.TRIAL: "a slot is still on trial; confirm or revert it first",
    S.TRIAL_BOOTED: "a slot is still on trial; confirm or revert it first",
}
_NOTHING = {
    E.FINISH: "no install is in progress",
    E.REJECT: "no install is in progress",
    E.ABORT: "no install is in progress",
    E.TRIAL_BOOT: "no slot is on trial",
    E.REVERT: "no slot is on trial",
    E.CONFIRM: "there is no booted trial slot to confirm",
}


def next_state(state: SlotState, event: SlotEvent) -> SlotState:
    """The state after ``event`` in ``state``; raises the event's refusal (see
    :data:`REFUSALS`) when the table does not allow it."""
    after = TRANSITIONS[state].get(event)
    if after is None:
        error = REFUSALS.get(event, IllegalSlotTransition)
        why = _BUSY.get(state, "") if event in REFUSALS else _NOTHING.get(event, "")
        raise error(f"{event.value} while {state.value}: {why or 'not allowed'}")
    return after


__all__ = [
    "OUTCOMES",
    "REFUSALS",
    "TRANSITIONS",
    "IllegalSlotTransition",
    "Outcome",
    "SlotEvent",
    "SlotState",
    "next_state",
]
