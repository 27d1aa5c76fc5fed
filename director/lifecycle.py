"""The lifecycles of the Director's records, each one small table of states and the moves
allowed between them (in the manner of h11's ``_state.py``).

Code that changes a record's state asks the record's table for the next state
(:meth:`Lifecycle.next`); a move the table does not allow raises
:class:`IllegalTransition`, a :class:`~director.common.Conflict` (HTTP 409, exit status 2
in the CLI) whose message says what to do instead. Nothing else compares state strings
to decide what may happen.

Assignments (one image for one ECU)::

    pending --send--> in_flight --confirm--> installed
       |                 |  '------fail------> failed
       |                 '--expire (unreachable past the deadline)--> failed
       |                 '--withdraw (its campaign cancelled)-------> cancelled
       '----cancel----> cancelled

Bundles (a vehicle's pending assignments, sent together)::

    in_flight --confirm--> installed
        |------fail------> failed
        '-----cancel-----> cancelled   (every assignment left was withdrawn)

Campaigns (one image for a selection of ECUs, in waves)::

    creating --recorded (every member recorded)--> launching --sent--> running
                                (a wave going out)    ^                   |
                                                      '------launch-------'  (the next wave)
    running --pause--> paused --resume--> running
       |---halt (a wave's failure rate passed the threshold)--> halted --resume--> running
       |---finish (the last wave ended)--> completed
       '---cancel--> cancelled          (also from creating, launching, paused, halted)

``creating`` and ``launching`` are done in batches, each its own transaction
(:mod:`director.campaignbatches`): a campaign found in one of them after a restart is
half-created or has a half-started wave, and the next tick finishes it. It cannot be
paused there (the wave is sent in a minute or two at most); it can be cancelled.

Campaign members (one ECU of a campaign)::

    waiting --launch (its wave goes out)--> assigned   (its assignment then tells the outcome)
       |-----skip (the assignment was refused)--> skipped
       '-----cancel--> cancelled
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from director.common import Conflict

# --- states (stored in the ``state`` columns) ------------------------------------------
PENDING = "pending"
IN_FLIGHT = "in_flight"
INSTALLED = "installed"
FAILED = "failed"
CANCELLED = "cancelled"
RUNNING = "running"
CREATING = "creating"
LAUNCHING = "launching"
PAUSED = "paused"
HALTED = "halted"
COMPLETED = "completed"
WAITING = "waiting"
ASSIGNED = "assigned"
SKIPPED = "skipped"

# --- events -------------------------------------------------------------------------------
#: the assignment goes out in a bundle (in the vehicle's next targets)
SEND = "send"
#: the vehicle reports the image installed / the whole bundle installed
CONFIRM = "confirm"
#: the ECU reports a new attack indicator, or another image of the bundle failed
FAIL = "fail"
#: the OEM withdraws an assignment that has not gone out, or cancels a campaign
CANCEL = "cancel"
#: the ECU stayed unreachable past the deadline with the assignment in flight
EXPIRE = "expire"
#: a cancelled campaign takes back an assignment in flight (the vehicle gets targets
#: without the image)
WITHDRAW = "withdraw"
#: campaigns: the OEM pauses or resumes; a wave's failure rate halts it; the last wave ends
PAUSE = "pause"
RESUME = "resume"
HALT = "halt"
FINISH = "finish"
#: campaign members: the member's wave goes out, or its assignment is refused; a running
#: campaign: its next wave starts going out
LAUNCH = "launch"
SKIP = "skip"
#: campaigns: every selected ECU is recorded as a member; every member of the wave is sent
RECORDED = "recorded"
SENT = "sent"


class IllegalTransition(Conflict):
    """A move its lifecycle's table does not allow (HTTP 409); the message names the
    record, its state and what to do instead."""

    def __init__(self, lifecycle: Lifecycle, state: str, event: str, subject: str) -> None:
        self.lifecycle = lifecycle.name
        self.state = state
        self.event = event
        if state not in lifecycle.moves:
            reason = f"{subject} has the unknown state {state[:32]!r}"
        else:
            reason = f"{subject} is {state}"
        super().__init__(f"{reason}: {lifecycle.advice[event]}")


@dataclass(frozen=True)
class Lifecycle:
    """One record type's states (in display order), the moves out of each (event -> next
    state; a final state has none) and, per event, the advice an illegal move gives."""

    name: str
    initial: str
    moves: Mapping[str, Mapping[str, str]]
    advice: Mapping[str, str]

    def __post_init__(self) -> None:
        if self.initial not in self.moves:
            raise ValueError(f"{self.name}: initial state {self.initial!r} is not in the table")
        for state, out in self.moves.items():
            for event, target in out.items():
                if target not in self.moves:
                    raise ValueError(f"{self.name}: {state} --{event}--> unknown {target!r}")
                if event not in self.advice:
                    raise ValueError(f"{self.name}: event {event!r} has no advice")

    @property
    def states(self) -> tuple[str, ...]:
        return tuple(self.moves)

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(self.advice)

    @property
    def final(self) -> frozenset[str]:
        """The states nothing leaves."""
        return frozenset(s for s, out in self.moves.items() if not out)

    def allows(self, state: str, event: str) -> bool:
        return event in self.moves.get(state, {})

    def next(self, state: str, event: str, *, subject: str | None = None) -> str:
        """The state ``event`` moves a record in ``state`` to; IllegalTransition if the
        table has no such move (``subject`` names the record in the message)."""
        if event not in self.advice:
            raise ValueError(f"{self.name}: unknown event {event!r}")
        target = self.moves.get(state, {}).get(event)
        if target is None:
            raise IllegalTransition(self, state, event, subject or f"the {self.name}")
        return target

    def sources(self, event: str) -> tuple[str, ...]:
        """The states ``event`` may leave (for a statement that moves many rows at once)."""
        return tuple(s for s, out in self.moves.items() if event in out)


ASSIGNMENT = Lifecycle(
    "assignment",
    initial=PENDING,
    moves={
        PENDING: {SEND: IN_FLIGHT, CANCEL: CANCELLED},
        IN_FLIGHT: {CONFIRM: INSTALLED, FAIL: FAILED, EXPIRE: FAILED, WITHDRAW: CANCELLED},
        INSTALLED: {},
        FAILED: {},
        CANCELLED: {},
    },
    advice={
        SEND: "only a pending assignment goes out in a bundle; assign the image again",
        CONFIRM: "only an assignment in flight is confirmed by a report; assign the image"
        " again to install it",
        FAIL: "only an assignment in flight fails; assign the image again to retry",
        CANCEL: "only a pending assignment can be cancelled. One sent to the vehicle ends"
        " when the vehicle reports it installed or failed; assign another image after that",
        EXPIRE: "only an assignment in flight fails by the unreachable deadline",
        WITHDRAW: "only an assignment in flight is withdrawn by a campaign's cancel",
    },
)

BUNDLE = Lifecycle(
    "bundle",
    initial=IN_FLIGHT,
    moves={
        IN_FLIGHT: {CONFIRM: INSTALLED, FAIL: FAILED, CANCEL: CANCELLED},
        INSTALLED: {},
        FAILED: {},
        CANCELLED: {},
    },
    advice={
        CONFIRM: "only a bundle in flight is confirmed; assign the images again",
        FAIL: "only a bundle in flight fails; assign the images again",
        CANCEL: "only a bundle in flight is cancelled; assign the images again",
    },
)

CAMPAIGN = Lifecycle(
    "campaign",
    initial=CREATING,
    moves={
        CREATING: {RECORDED: LAUNCHING, CANCEL: CANCELLED},
        LAUNCHING: {SENT: RUNNING, CANCEL: CANCELLED},
        RUNNING: {
            LAUNCH: LAUNCHING,
            PAUSE: PAUSED,
            HALT: HALTED,
            FINISH: COMPLETED,
            CANCEL: CANCELLED,
        },
        PAUSED: {RESUME: RUNNING, CANCEL: CANCELLED},
        HALTED: {RESUME: RUNNING, CANCEL: CANCELLED},
        COMPLETED: {},
        CANCELLED: {},
    },
    advice={
        RECORDED: "only a campaign being created has its members recorded",
        SENT: "only a campaign whose wave is going out has it sent",
        LAUNCH: "only a running campaign starts its next wave",
        PAUSE: "only a running campaign can be paused; one being created or sending a"
        " wave can be paused once the wave is out (a minute or two at most), or cancelled",
        RESUME: "only a paused or halted campaign can be resumed",
        HALT: "only a running campaign halts",
        FINISH: "only a running campaign finishes",
        CANCEL: "a campaign that ended cannot be cancelled; start another one",
    },
)

MEMBER = Lifecycle(
    "campaign member",
    initial=WAITING,
    moves={
        WAITING: {LAUNCH: ASSIGNED, SKIP: SKIPPED, CANCEL: CANCELLED},
        ASSIGNED: {},
        SKIPPED: {},
        CANCELLED: {},
    },
    advice={
        LAUNCH: "only a waiting member goes out with its wave",
        SKIP: "only a waiting member is skipped",
        CANCEL: "only a waiting member is cancelled; an assigned one follows its assignment",
    },
)

#: every lifecycle of the Director, by name
LIFECYCLES: dict[str, Lifecycle] = {lc.name: lc for lc in (ASSIGNMENT, BUNDLE, CAMPAIGN, MEMBER)}

__all__ = [
    "ASSIGNED",
    "ASSIGNMENT",
    "BUNDLE",
    "CAMPAIGN",
    "CANCEL",
    "CANCELLED",
    "COMPLETED",
    "CONFIRM",
    "CREATING",
    "EXPIRE",
    "FAIL",
    "FAILED",
    "FINISH",
    "HALT",
    "HALTED",
    "INSTALLED",
    "IN_FLIGHT",
    "LAUNCH",
    "LAUNCHING",
    "LIFECYCLES",
    "MEMBER",
    "PAUSE",
    "PAUSED",
    "PENDING",
    "RECORDED",
    "RESUME",
    "RUNNING",
    "SEND",
    "SENT",
    "SKIP",
    "SKIPPED",
    "WAITING",
    "WITHDRAW",
    "IllegalTransition",
    "Lifecycle",
]
