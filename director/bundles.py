"""Assignments and bundles: which image each ECU should run, and when it goes out.

The Director's data path starts here: :meth:`Bundles.assign` records an assignment
(``pending``); :meth:`Bundles.issue` sends every pending assignment of a vehicle as one
bundle once none is in flight (§4.3), which is the vehicle's next targets
(:meth:`director.publishing.Publisher.publish`); and the vehicle's manifests come back to
:meth:`Bundles.advance`, which confirms or fails them and issues the next bundle. Every
state change asks :mod:`director.lifecycle`.

Before an assignment is recorded, its image's dependencies, conflicts and release counter
are checked (:mod:`director.dependencies`); one that needs another ECU's assignment
installed first waits for it (``depends_on``) and goes out in a later bundle. An ECU the
Primary names unreachable past ``unreachable_deadline_seconds`` fails its assignment in
flight (:meth:`Bundles.expire_unreachable`); a cancelled campaign withdraws its
assignments in flight (:meth:`Bundles.withdraw`), and the vehicle gets targets without
those images.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director import inventory as inv
from director.assigning import encryption_choice, insert_checked
from director.common import Invalid, NotFound, Unavailable, epoch, iso
from director.config import Config
from director.encrypting import Sealer, bundle_targets
from director.imageview import ImageRepoView
from director.lifecycle import (
    ASSIGNMENT,
    BUNDLE,
    CANCEL,
    CANCELLED,
    CONFIRM,
    EXPIRE,
    FAIL,
    FAILED,
    IN_FLIGHT,
    INSTALLED,
    PENDING,
    SEND,
    WITHDRAW,
)
from director.publishing import Publisher
from director.vehicles import Fleet
from uptane.errors import TargetNotFound, UnauthenticatedPeer, UptaneError
from uptane.identity import ImageIdentity, same_image
from uptane.manifest import EcuVersionReport
from uptane.metadata import TargetFile
from uptane.paths import check_target_path


class Absence(NamedTuple):
    """An ECU the Primary names unreachable: since when without a break (the Director's
    time, epoch seconds), the Primary's reason, and when the ECU last answered it."""

    since: int
    reason: str
    last_seen: int | None


def _assigned_image(assignment: Any) -> ImageIdentity:
    """The image an assignment row names."""
    return ImageIdentity(assignment.target_path, assignment.length, json.loads(assignment.hashes))


class Bundles:
    """Assignments and the bundle each vehicle has in flight."""

    def __init__(
        self,
        engine: Engine,
        fleet: Fleet,
        publisher: Publisher,
        image_view: Callable[[], ImageRepoView],
        *,
        clock: Callable[[], datetime],
        config: Config,
        sealer: Sealer | None = None,
    ) -> None:
        self.engine = engine
        self.fleet = fleet
        self.publisher = publisher
        self.image_view = image_view
        self.clock = clock
        self.config = config
        #: deltas and encryption for a bundle's entries (director.encrypting)
        self.sealer = sealer

    # --- assigning --------------------------------------------------------------------------

    def assign(
        self,
        vin: str,
        items: Iterable[tuple[str, str]],
        *,
        force: bool = False,
        encrypt: Mapping[str, bool | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Assign images to ECUs of one vehicle: ``items`` are (ECU serial, target path).
        Each image must be in the Image repository, fit the ECU's hardware id, and pass
        the dependency, conflict and downgrade checks (``force``: allow a downgrade). The
        assignments go out together with every other pending one of the vehicle, as one
        bundle, once no earlier bundle is in flight; one that needs another's image
        installed first goes out after it. ``encrypt`` (by ECU serial): that assignment's
        choice of encryption, else the OEM's rules (:mod:`director.encrypting`)."""
        items = list(items)
        if not items:
            raise Invalid("no assignments given")
        serials = [s for s, _ in items]
        if len(set(serials)) != len(serials):
            raise Invalid("one assignment per ECU in a request")
        for _, path in items:
            check_target_path(path)  # MalformedInput: 400
        with self.engine.connect() as conn:
            vid = self.fleet.vehicle_id(conn, vin)
            ecus = {e.serial: e for e in self.fleet.ecus_of(conn, vid)}
        entries: list[tuple[Any, TargetFile]] = []
        for serial, path in items:
            ecu = ecus.get(serial)
            if ecu is None:
                raise NotFound(f"vehicle {vin} has no ECU {serial[:64]!r}")
            entries.append((ecu, self.image_entry(path, ecu.hardware_id)))
        self._prepare(entries, encrypt or {})
        now = self.clock()
        with self.engine.begin() as conn:
            ids = insert_checked(conn, vid, vin, entries, now, force=force, encrypt=encrypt)
            self.issue(conn, vid, vin, now)
        return self.fleet.list_assignments(ids=ids)

    def _prepare(
        self, entries: list[tuple[Any, TargetFile]], encrypt: Mapping[str, bool | None]
    ) -> None:
        """Encrypt, before the transaction that sends them, the images that go out
        encrypted (once per image: later bundles find the ciphertext ready)."""
        if self.sealer is None:
            return
        with self.engine.connect() as conn:
            for ecu, tf in entries:
                if encryption_choice(conn, ecu, tf, encrypt.get(ecu.serial)):
                    self.sealer.store.ensure(tf)

    def cancel(self, assignment_id: int) -> dict[str, Any]:
        """Cancel a pending assignment. One already sent to the vehicle cannot be
        (:class:`~director.lifecycle.IllegalTransition`, 409), except on a bench vehicle
        (:func:`is_bench`): there it is withdrawn, and the bench vehicle's targets are
        signed again without it (issue 18: a bench flash abandoned half way must not keep
        the bench vehicle's next bundle back)."""
        now = self.clock()
        a = inv.assignments
        with self.engine.begin() as conn:
            # locked: a bundle issued meanwhile (another process) must not send it too
            row = conn.execute(
                sa.select(a).where(a.c.id == assignment_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no assignment {assignment_id}")
            if row.state == IN_FLIGHT and is_bench(conn, int(row.vehicle_id)):
                self.withdraw(conn, [assignment_id], "withdrawn by the OEM (bench vehicle)", now)
            else:
                state = ASSIGNMENT.next(row.state, CANCEL, subject=f"assignment {assignment_id}")
                conn.execute(
                    a.update()
                    .where(a.c.id == assignment_id)
                    .values(state=state, updated_at=epoch(now), reason="cancelled by the OEM")
                )
        return self.fleet.list_assignments(ids=[assignment_id])[0]

    def image_entry(self, path: str, hardware_id: str) -> TargetFile:
        """The Image repository's entry for ``path`` as an ECU of ``hardware_id`` sees it.
        An image no role lists is "not published (yet)": an offline ``sign`` is picked up
        by the Image repository service within a second, so this is a timing or a typing
        matter, never named as an attack."""
        try:
            return self.image_view().lookup(path, hardware_id)
        except TargetNotFound as e:
            raise Invalid(
                f"{path[:200]!r} is not published in the Image repository (yet) for hardware"
                f" {hardware_id!r}: {e.message}. If it was just signed, retry in a second;"
                " otherwise check the path, its hardware ids and its delegation"
            ) from None
        except UptaneError as e:
            raise Invalid(f"the Image repository refuses {path[:200]!r}: {e.message}") from None
        except (httpx.HTTPError, OSError) as e:
            raise Unavailable(f"the Image repository cannot be read: {e}") from None

    # --- bundles ----------------------------------------------------------------------------

    def issue(self, conn: Connection, vid: int, vin: str, now: datetime) -> int | None:
        """If nothing is in flight, send every pending assignment that may go out as one
        bundle (§4.3 partial-bundle installation: no new bundle until the last one is
        confirmed): the vehicle's next targets list them. An assignment waiting for
        another to be installed first stays pending until it is, and is cancelled if that
        one ended otherwise. Returns the new bundle's id, or None."""
        a, bundles = inv.assignments, inv.bundles
        busy = conn.execute(
            sa.select(bundles.c.id).where(bundles.c.vehicle_id == vid, bundles.c.state == IN_FLIGHT)
        ).first()
        if busy is not None:
            return None
        self._cancel_orphans(conn, vid, now)
        first = a.alias("first")
        pending = conn.execute(
            sa.select(a.c.id)
            .outerjoin(first, first.c.id == a.c.depends_on)
            .where(a.c.vehicle_id == vid, a.c.state == PENDING)
            .where(sa.or_(a.c.depends_on.is_(None), first.c.state == INSTALLED))
        ).all()
        if not pending:
            return None
        result = conn.execute(
            bundles.insert().values(vehicle_id=vid, state=BUNDLE.initial, created_at=epoch(now))
        )
        assert result.inserted_primary_key is not None
        bid = int(result.inserted_primary_key[0])
        conn.execute(
            a.update()
            # still pending: one cancelled meanwhile (another process) stays cancelled
            .where(a.c.id.in_([p.id for p in pending]), a.c.state == PENDING)
            .values(
                bundle_id=bid,
                state=ASSIGNMENT.next(PENDING, SEND),
                updated_at=epoch(now),
                # the indicator the ECU carries as the bundle goes out is not news to it
                stale_attack=sa.select(inv.ecus.c.last_attack)
                .where(inv.ecus.c.id == a.c.ecu_id)
                .scalar_subquery(),
            )
        )
        targets = self._bundle_targets(conn, bid)
        version = self.publisher.publish(conn, vid, vin, now, new_targets=targets)
        conn.execute(bundles.update().where(bundles.c.id == bid).values(targets_version=version))
        return bid

    @staticmethod
    def _cancel_orphans(conn: Connection, vid: int, now: datetime) -> None:
        """Cancel the pending assignments whose prerequisite ended without installing."""
        a = inv.assignments
        first = a.alias("first")
        orphans = conn.execute(
            sa.select(a.c.id, first.c.id.label("first_id"), first.c.state.label("first_state"))
            .join(first, first.c.id == a.c.depends_on)
            .where(a.c.vehicle_id == vid, a.c.state == PENDING)
            .where(first.c.state.in_((FAILED, CANCELLED)))
        ).all()
        for o in orphans:
            conn.execute(
                a.update()
                .where(a.c.id == o.id)
                .values(
                    state=ASSIGNMENT.next(PENDING, CANCEL, subject=f"assignment {o.id}"),
                    reason=f"cancelled: assignment {o.first_id}, which had to be installed"
                    f" first, is {o.first_state}",
                    updated_at=epoch(now),
                )
            )

    def _bundle_targets(self, conn: Connection, bid: int) -> list[TargetFile]:
        """The targets entries of bundle ``bid``: one per image (or delta), each naming
        its ECUs, sealed for those that use encryption
        (:func:`director.encrypting.bundle_targets`)."""
        return bundle_targets(conn, bid, self.sealer)

    def advance(
        self,
        conn: Connection,
        bundle_id: int,
        vid: int,
        vin: str,
        serials: dict[int, str],
        reports: dict[str, EcuVersionReport],
        now: datetime,
        unreachable: dict[str, Absence] | None = None,
    ) -> dict[str, Any]:
        """Move the bundle in flight on after an accepted manifest (``reports`` by ECU
        serial; ``serials`` maps the vehicle's ECU ids to serials; ``unreachable``: the
        ECUs the manifest names unreachable): an assignment is installed when its ECU
        reports the assigned image (:func:`same_image`), failed when the ECU reports an
        attack indicator that is new to it instead, and failed ``unreachable`` when its ECU
        has been named unreachable for ``unreachable_deadline_seconds`` since the bundle
        went out. The bundle ends when every assignment did (one failure fails it); then
        the next bundle (or empty targets) goes out.

        An indicator is new to an assignment unless it is the assignment's
        ``stale_attack``: the one the ECU carried when the bundle went out, reported
        unchanged since (a Secondary repeats its last indicator until something succeeds,
        and that old one already failed, or predates, this bundle). A report with another
        indicator, or with none, ends the staleness: from then on any indicator fails it."""
        a = inv.assignments
        rows = conn.execute(sa.select(a).where(a.c.bundle_id == bundle_id)).all()
        sent: int | None = None
        states = []
        for row in rows:
            serial = serials.get(row.ecu_id, "")
            state = self._apply_report(conn, row, reports.get(serial), now)
            absence = (unreachable or {}).get(serial)
            if absence is not None and state == IN_FLIGHT:
                if sent is None:
                    sent = self._sent_at(conn, bundle_id)
                state = self._expire(conn, row, serial, absence, sent, now)
            states.append(state)
        final = self._settle(conn, bundle_id, vid, vin, states, now)
        return {"id": bundle_id, "state": final}

    @staticmethod
    def _sent_at(conn: Connection, bundle_id: int) -> int:
        b = inv.bundles
        return int(conn.execute(sa.select(b.c.created_at).where(b.c.id == bundle_id)).scalar_one())

    def _expire(
        self, conn: Connection, row: Any, serial: str, absence: Absence, sent: int, now: datetime
    ) -> str:
        """Fail an assignment in flight whose ECU has been unreachable, since the bundle
        went out, for the deadline or longer; returns its state."""
        deadline = int(self.config.unreachable_deadline_seconds)
        if epoch(now) - max(absence.since, sent) < deadline:
            return IN_FLIGHT
        seen = iso(absence.last_seen) or "never"
        reason = (
            f"unreachable: the Primary has named ECU {serial} unreachable since"
            f" {iso(absence.since)} ({absence.reason}; it last answered: {seen}), past the"
            f" {deadline} s deadline"
        )
        state = ASSIGNMENT.next(row.state, EXPIRE, subject=f"assignment {row.id}")
        conn.execute(
            inv.assignments.update()
            .where(inv.assignments.c.id == row.id)
            .values(state=state, reason=reason[:1000], updated_at=epoch(now))
        )
        return state

    def _settle(
        self,
        conn: Connection,
        bundle_id: int,
        vid: int,
        vin: str,
        states: list[str],
        now: datetime,
        *,
        republish: bool = False,
    ) -> str:
        """End the bundle when its assignments' ``states`` say so: one failure fails it
        (and what is still in flight), all installed confirms it, and withdrawn ones with
        none in flight cancel it; the next bundle (or empty targets) then goes out. While
        something is in flight it stays; ``republish``: its targets changed (an assignment
        was withdrawn) and are signed again without it."""
        a = inv.assignments
        if FAILED in states:  # one failure fails the bundle, and what is still in flight
            event = FAIL
            conn.execute(
                a.update()
                .where(a.c.bundle_id == bundle_id, a.c.state.in_(ASSIGNMENT.sources(FAIL)))
                .values(
                    state=ASSIGNMENT.next(IN_FLIGHT, FAIL),
                    reason="another image of the bundle failed",
                    updated_at=epoch(now),
                )
            )
        elif IN_FLIGHT in states:
            if republish:
                targets = self._bundle_targets(conn, bundle_id)
                self.publisher.publish(conn, vid, vin, now, new_targets=targets)
            return IN_FLIGHT
        else:
            event = CONFIRM if all(s == INSTALLED for s in states) else CANCEL
        final = BUNDLE.next(IN_FLIGHT, event, subject=f"bundle {bundle_id}")
        conn.execute(
            inv.bundles.update()
            .where(inv.bundles.c.id == bundle_id)
            .values(state=final, finished_at=epoch(now))
        )
        if self.issue(conn, vid, vin, now) is None:
            self.publisher.publish(conn, vid, vin, now, new_targets=[])
        return final

    @staticmethod
    def _apply_report(
        conn: Connection, row: Any, report: EcuVersionReport | None, now: datetime
    ) -> str:
        """Apply its ECU's ``report`` (if any) to one assignment of the bundle in flight;
        returns the assignment's state after it."""
        if report is None or not ASSIGNMENT.allows(row.state, CONFIRM):
            return str(row.state)  # no report, or it ended before this manifest
        state, reason, stale = row.state, row.reason, row.stale_attack
        subject = f"assignment {row.id}"
        if same_image(report.installed, _assigned_image(row)):
            state, reason = ASSIGNMENT.next(state, CONFIRM, subject=subject), None
        elif report.attack and report.attack != stale and not _unauthenticated(report):
            state = ASSIGNMENT.next(state, FAIL, subject=subject)
            reason = f"ECU reported: {report.attack}"[:1000]
        elif stale is not None and report.attack != stale:
            stale = None  # the old indicator is gone: any later one is new
        if state != row.state or stale != row.stale_attack:
            conn.execute(
                inv.assignments.update()
                .where(inv.assignments.c.id == row.id)
                .values(state=state, reason=reason, updated_at=epoch(now), stale_attack=stale)
            )
        return str(state)

    # --- withdrawing and expiring outside a manifest ----------------------------------------

    def withdraw(self, conn: Connection, ids: Sequence[int], reason: str, now: datetime) -> int:
        """Take back the assignments ``ids`` that are in flight (a cancelled campaign): each
        becomes ``cancelled``, and its vehicle's targets are signed again without it (or
        the bundle ends, and the next one or empty targets go out). A vehicle that already
        installs the image may still finish; its reports say what it runs. Returns how
        many were withdrawn."""
        a = inv.assignments
        rows = conn.execute(
            sa.select(a, inv.vehicles.c.vin)
            .join(inv.vehicles, inv.vehicles.c.id == a.c.vehicle_id)
            .where(a.c.id.in_(list(ids)), a.c.state == IN_FLIGHT)
        ).all()
        bundles: dict[int, tuple[int, str]] = {}
        for r in rows:
            conn.execute(
                a.update()
                .where(a.c.id == r.id)
                .values(
                    state=ASSIGNMENT.next(r.state, WITHDRAW, subject=f"assignment {r.id}"),
                    reason=reason[:1000],
                    updated_at=epoch(now),
                )
            )
            bundles[int(r.bundle_id)] = (int(r.vehicle_id), str(r.vin))
        for bid, (vid, vin) in bundles.items():
            self._settle(conn, bid, vid, vin, self._states(conn, bid), now, republish=True)
        return len(rows)

    @staticmethod
    def _states(conn: Connection, bundle_id: int) -> list[str]:
        a = inv.assignments
        return [
            str(s)
            for s in conn.execute(sa.select(a.c.state).where(a.c.bundle_id == bundle_id)).scalars()
        ]

    def expire_unreachable(self, now: datetime | None = None) -> int:
        """Fail, across the fleet, the assignments in flight whose ECU the last manifest
        named unreachable for the deadline or longer since their bundle went out (a
        vehicle that sends no manifest still gets its next bundle once it does). Returns
        how many failed."""
        now = now or self.clock()
        cutoff = epoch(now) - int(self.config.unreachable_deadline_seconds)
        a, e, b = inv.assignments, inv.ecus, inv.bundles
        due = (
            sa.select(a.c.bundle_id, a.c.vehicle_id, inv.vehicles.c.vin)
            .join(e, e.c.id == a.c.ecu_id)
            .join(b, b.c.id == a.c.bundle_id)
            .join(inv.vehicles, inv.vehicles.c.id == a.c.vehicle_id)
            .where(
                a.c.state == IN_FLIGHT, e.c.unreachable_since <= cutoff, b.c.created_at <= cutoff
            )
            .distinct()
        )
        with self.engine.connect() as conn:
            found = conn.execute(due).all()
        failed = 0
        for bid, vid, vin in found:
            with self.engine.begin() as conn:
                failed += self._expire_bundle(conn, int(bid), int(vid), str(vin), now)
        return failed

    def _expire_bundle(self, conn: Connection, bid: int, vid: int, vin: str, now: datetime) -> int:
        """:meth:`expire_unreachable` for one bundle, in the caller's transaction (rows read
        again, locked: a manifest may have moved it on meanwhile)."""
        a, e = inv.assignments, inv.ecus
        bundle = conn.execute(
            sa.select(inv.bundles).where(inv.bundles.c.id == bid).with_for_update()
        ).first()
        if bundle is None or bundle.state != IN_FLIGHT:
            return 0
        rows = conn.execute(
            sa.select(a, e.c.serial, e.c.unreachable_since, e.c.unreachable_reason, e.c.last_seen)
            .join(e, e.c.id == a.c.ecu_id)
            .where(a.c.bundle_id == bid)
        ).all()
        states, failed = [], 0
        for r in rows:
            state = str(r.state)
            if state == IN_FLIGHT and r.unreachable_since is not None:
                absence = Absence(int(r.unreachable_since), r.unreachable_reason or "", r.last_seen)
                state = self._expire(conn, r, r.serial, absence, int(bundle.created_at), now)
                failed += state == FAILED
            states.append(state)
        if failed:
            self._settle(conn, bid, vid, vin, states, now)
        return failed


#: the hardware id of a bench laptop acting as a vehicle's Primary: ``uptane-flash
#: session``'s default (hardware/bench_session.py; the two packages share no code)
BENCH_HARDWARE_ID = "uptane-bench"


def is_bench(conn: Connection, vid: int) -> bool:
    """Whether vehicle ``vid`` is a bench vehicle: its Primary is a bench laptop
    (registered with hardware id :data:`BENCH_HARDWARE_ID`). Its bundle in flight may be
    cancelled (withdrawn): no vehicle on the road is partly installing it."""
    e = inv.ecus
    found = conn.execute(
        sa.select(e.c.id).where(
            e.c.vehicle_id == vid, e.c.is_primary.is_(True), e.c.hardware_id == BENCH_HARDWARE_ID
        )
    ).first()
    return found is not None


def _unauthenticated(report: EcuVersionReport) -> bool:
    """An indicator a Secondary without a link key raised on input that anyone on its bus
    could have sent (docs/link-protocol.md, "Without a link key"): it is recorded with the
    other attacks, but it is no verdict on the update, so it never fails a bundle."""
    return report.attack_name == UnauthenticatedPeer.attack
