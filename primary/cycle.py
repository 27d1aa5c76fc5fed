"""One update cycle's shared context and its bookkeeping in the cycle record.

:class:`Cycle` is what every stage of :meth:`primary.agent.Primary.run_cycle` receives:
the configuration, the state, the cycle record being built, the result being returned,
and how to talk to people. Its methods are the record's few writes that several stages
make (an attack seen, an ECU unreachable, an update installed or refused): each one moves
the update through :mod:`primary.lifecycle` and saves the record before the cycle goes
on, so a crash right after it is recovered by the next cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from primary.config import PrimaryConfig
from primary.fetcher import Fetcher
from primary.lifecycle import Event, Outcome, advance
from primary.state import CycleRecord, Pending, PrimaryState, image_of
from primary.timekeeping import Timekeeper
from uptane.delta import produced_image
from uptane.errors import DropRequestAttack, FetchError, InsufficientSpace, LinkTimeout, UptaneError
from uptane.identity import ImageIdentity, same_image
from uptane.keys import Signer
from uptane.limits import Limits
from uptane.manifest import EcuVersionReport
from uptane.metadata import TargetFile

Say = Callable[[str], None]

#: ``progress(what)`` gives the callback ``(done, total)`` for one transfer named ``what``
#: (``download PATH`` or ``send PATH to ECU``)
ProgressFactory = Callable[[str], Callable[[int, int], None]]

#: how times are kept in the cycle record (``last_seen``, ``last_cycle``)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

#: how many times one image is offered to an ECU that refuses it (its reports say why)
MAX_REFUSALS = 3


@dataclass
class CycleResult:
    """What one cycle did, for the CLI and tests."""

    manifest_sent: bool = False
    #: why the manifest did not reach the Director (the server's reason, or the transport
    #: failure); the cycle's error unless a later stage had one (primary.agent)
    manifest_error: str | None = None
    unreachable: list[str] = field(default_factory=list)
    #: every Secondary the manifest represents by an ``unreachable_ecus`` entry, with the
    #: reason it gives (unreachable, its report refused, or in another encoding)
    not_reported: dict[str, str] = field(default_factory=dict)
    verified: bool = False
    stopped_early: str | None = None
    error: UptaneError | None = None
    downloaded: list[str] = field(default_factory=list)
    installed: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    attacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed


@dataclass
class Cycle:
    """One cycle's context (see the module doc)."""

    config: PrimaryConfig
    state: PrimaryState
    record: CycleRecord
    result: CycleResult
    #: the cycle's time (verified from the time servers, when configured) and the signed
    #: time each Secondary is given (primary.timekeeping)
    time: Timekeeper
    fetcher: Fetcher
    key: Callable[[], Signer]
    say: Say
    progress: ProgressFactory

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def save(self) -> None:
        self.state.save_cycle(self.record)

    # --- errors ---------------------------------------------------------------------------

    def attack(self, error: UptaneError, where: str) -> None:
        """Keep an attack the Primary saw: the next manifest reports it."""
        entry = {
            "where": where,
            "code": error.code,
            "attack": error.attack,
            "message": str(error)[:300],
        }
        self.record.attacks.append(entry)
        del self.record.attacks[:-16]  # bounded
        self.result.attacks.append(entry)

    def stopped(self, error: UptaneError, where: str) -> None:
        """A repository step failed: the first error is the cycle's, and anything but a
        transport failure is an attack to report."""
        self.result.error = self.result.error or error
        if not transport_failure(error):
            self.attack(error, where)

    # --- per-ECU outcomes -----------------------------------------------------------------

    def unreachable(self, ecu_id: str, error: UptaneError) -> None:
        """The ECU did not answer: named in this cycle's manifest, its update waits."""
        self.result.unreachable.append(ecu_id)
        self.record.results[ecu_id] = {
            "outcome": Outcome.UNREACHABLE.value,
            # the message only: a link that does not answer is not an attack
            "reason": error.message[:200],
            **self._sending_entry(ecu_id),
        }

    def seen(self, ecu_id: str) -> None:
        """The ECU answered with a report that passed its checks: remembered as the last
        time it answered (an ``unreachable_ecus`` entry carries it later)."""
        self.record.last_seen[ecu_id] = self.time.now().strftime(TIME_FORMAT)

    def sending(self, ecu_id: str) -> ImageIdentity | None:
        """The image of the last transfer this Primary started to ``ecu_id``, or None."""
        return image_of(self.record.results.get(ecu_id, {}), "sending")

    def set_sending(self, ecu_id: str, image: TargetFile) -> None:
        """Record, before any byte of it goes, which image a transfer to ``ecu_id`` is, so
        that a later cycle resumes only this very image."""
        entry = self.record.results.setdefault(ecu_id, {})
        entry.setdefault("outcome", Outcome.SENDING.value)
        if not same_image(self.sending(ecu_id), image):
            entry["sending"] = image.identity().to_dict()
            self.save()

    def _sending_entry(self, ecu_id: str) -> dict[str, Any]:
        sent = self.sending(ecu_id)
        return {"sending": sent.to_dict()} if sent is not None else {}

    def installed(self, p: Pending) -> None:
        """The ECU runs ``p``'s image: the update is done."""
        advance(p, Event.INSTALLED)
        record = self.record
        record.installed[p.ecu_id] = produced_image(p.target)  # a delta's full image
        record.pending.pop(p.ecu_id, None)
        record.results[p.ecu_id] = {"outcome": Outcome.INSTALLED.value, "filename": p.target.path}
        self.result.installed[p.ecu_id] = produced_image(p.target).path  # not a delta's
        self.save()

    def refused(self, p: Pending, e: UptaneError) -> None:
        """The ECU refused the image or its metadata: that is its verdict (its next report
        carries the attack indicator). The update is dropped; the same image is offered
        again at most ``MAX_REFUSALS`` times in all, not on every cycle forever."""
        advance(p, Event.REFUSED)
        record = self.record
        record.pending.pop(p.ecu_id, None)
        before = record.results.get(p.ecu_id, {})
        same = before.get("outcome") == Outcome.FAILED and same_image(
            image_of(before, "image"), p.target
        )
        refusals = before.get("refusals", 0) if same else 0
        record.results[p.ecu_id] = {
            "outcome": Outcome.FAILED.value,
            "filename": p.target.path,
            "image": p.target.identity().to_dict(),
            "refusals": refusals + 1,
            "code": e.code,
            "attack": e.attack,
            "reason": str(e)[:200],
            # a refused transfer may stay resumable (a slow-retrieval refusal keeps the
            # partial): what it was is still known
            **self._sending_entry(p.ecu_id),
        }
        self.result.failed[p.ecu_id] = str(e)
        self.save()
        self.say(f"{p.ecu_id}: refused {p.target.path}: {e}")

    def refusals(self, ecu_id: str, target: TargetFile) -> int:
        """How many times ``ecu_id`` refused ``target`` in a row (0: not that image)."""
        last = self.record.results.get(ecu_id, {})
        if last.get("outcome") != Outcome.FAILED or not same_image(image_of(last, "image"), target):
            return 0
        n = last.get("refusals", 0)
        return n if isinstance(n, int) else 0

    def note_installed(self, ecu_id: str, body: EcuVersionReport) -> None:
        """What the ECU's signed report says it runs is what it runs."""
        img = body.installed
        if not img.filename:
            self.record.installed.pop(ecu_id, None)
            return
        reported = TargetFile(img.filename, img.length, dict(img.hashes))
        reported.release_counter = body.release_counter
        if not same_image(self.record.installed.get(ecu_id), reported):
            self.record.installed[ecu_id] = reported


def transport_failure(e: UptaneError) -> bool:
    """A repository that could not be reached or answered unusably (an outage looks the
    same as a drop-request attack): kept as the last error and retried, but not reported
    as an attack, so that a backend outage does not fail the vehicle's updates. Slow
    retrieval is reported (§5.4)."""
    return isinstance(e, (FetchError, InsufficientSpace, DropRequestAttack)) and not isinstance(
        e, LinkTimeout
    )


__all__ = [
    "MAX_REFUSALS",
    "TIME_FORMAT",
    "Cycle",
    "CycleResult",
    "ProgressFactory",
    "Say",
    "transport_failure",
]
