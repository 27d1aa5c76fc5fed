"""Assignments and bundles: which image each ECU should run, and when it goes out.

The Director's data path starts here: :meth:`Bundles.assign` records an assignment
(``pending``); :meth:`Bundles.issue` sends every pending assignment of a vehicle as one
bundle once none is in flight (§4.3), which is the vehicle's next targets
(:meth:`director.publishing.Publisher.publish`); and the vehicle's manifests come back to
:meth:`Bundles.advance`, which confirms or fails them and issues the next bundle. Every
state change asks :mod:`director.lifecycle`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director import inventory as inv
from director.common import Conflict, Invalid, NotFound, Unavailable, epoch
from director.imageview import ImageRepoView
from director.lifecycle import (
    ASSIGNMENT,
    BUNDLE,
    CANCEL,
    CONFIRM,
    FAIL,
    FAILED,
    IN_FLIGHT,
    INSTALLED,
    PENDING,
    SEND,
)
from director.publishing import Publisher
from director.vehicles import Fleet
from uptane.errors import TargetNotFound, UptaneError
from uptane.identity import ImageIdentity, same_image
from uptane.manifest import EcuVersionReport
from uptane.metadata import TargetFile
from uptane.paths import check_target_path


def _assigned_image(assignment: Any) -> ImageIdentity:
    """The image an assignment row names."""
    return ImageIdentity(assignment.target_path, assignment.length, json.loads(assignment.hashes))


def _assignment_values(vid: int, ecu: Any, tf: TargetFile, now: datetime) -> dict[str, Any]:
    """A new assignment row: ``tf`` (the Image repository's entry) for ``ecu``."""
    return {
        "vehicle_id": vid,
        "ecu_id": ecu.id,
        "target_path": tf.path,
        "length": tf.length,
        "hashes": json.dumps(tf.hashes, sort_keys=True),
        "hardware_id": ecu.hardware_id,
        "release_counter": tf.release_counter,
        "image_custom": json.dumps(
            {"hardwareIds": tf.hardware_ids, "shallMatch": tf.shall_match}, sort_keys=True
        ),
        "state": ASSIGNMENT.initial,
        "created_at": epoch(now),
        "updated_at": epoch(now),
    }


def _target_of(r: Any) -> TargetFile:
    """The targets entry of an assignment row, copied from the Image repository's entry:
    length, hashes, release counter, hardware ids and the SHALL-match section (§5.4.4.2
    step 10.2)."""
    custom = json.loads(r.image_custom or "{}")
    return TargetFile(
        r.target_path,
        r.length,
        json.loads(r.hashes),
        hardware_ids=list(custom.get("hardwareIds") or []),
        release_counter=r.release_counter,
        shall_match=custom.get("shallMatch"),
    )


class Bundles:
    """Assignments, campaigns and the bundle each vehicle has in flight."""

    def __init__(
        self,
        engine: Engine,
        fleet: Fleet,
        publisher: Publisher,
        image_view: Callable[[], ImageRepoView],
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.fleet = fleet
        self.publisher = publisher
        self.image_view = image_view
        self.clock = clock

    # --- assigning --------------------------------------------------------------------------

    def assign(self, vin: str, items: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """Assign images to ECUs of one vehicle: ``items`` are (ECU serial, target path).
        Each image must be in the Image repository and fit the ECU's hardware id. The
        assignments go out together with every other pending one of the vehicle, as one
        bundle, once no earlier bundle is in flight."""
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
            entries.append((ecu, self._image_entry(path, ecu.hardware_id)))
        now = self.clock()
        with self.engine.begin() as conn:
            ids = [self._insert(conn, vid, ecu, tf, now) for ecu, tf in entries]
            self.issue(conn, vid, vin, now)
        return self.fleet.list_assignments(ids=ids)

    def campaign(self, hardware_id: str, path: str) -> dict[str, Any]:
        """Assign ``path`` to every ECU with ``hardware_id`` across the fleet. ECUs that
        already have a pending assignment are skipped and listed."""
        check_target_path(path)
        tf = self._image_entry(path, hardware_id)
        now = self.clock()
        created: list[int] = []
        skipped: list[dict[str, str]] = []
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(inv.ecus, inv.vehicles.c.vin)
                .join(inv.vehicles, inv.vehicles.c.id == inv.ecus.c.vehicle_id)
                .where(inv.ecus.c.hardware_id == hardware_id)
                .order_by(inv.ecus.c.id)
            ).all()
            touched: dict[int, str] = {}
            for ecu in rows:
                try:
                    created.append(self._insert(conn, ecu.vehicle_id, ecu, tf, now))
                    touched[ecu.vehicle_id] = ecu.vin
                except Conflict as e:
                    skipped.append({"vin": ecu.vin, "ecu": ecu.serial, "reason": str(e)})
            for vid, vin in touched.items():
                self.issue(conn, vid, vin, now)
        return {"hardware_id": hardware_id, "target": path, "created": created, "skipped": skipped}

    def cancel(self, assignment_id: int) -> dict[str, Any]:
        """Cancel a pending assignment; one already sent to the vehicle cannot be
        (:class:`~director.lifecycle.IllegalTransition`, 409)."""
        now = self.clock()
        a = inv.assignments
        with self.engine.begin() as conn:
            # locked: a bundle issued meanwhile (another process) must not send it too
            row = conn.execute(
                sa.select(a).where(a.c.id == assignment_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no assignment {assignment_id}")
            state = ASSIGNMENT.next(row.state, CANCEL, subject=f"assignment {assignment_id}")
            conn.execute(
                a.update()
                .where(a.c.id == assignment_id)
                .values(state=state, updated_at=epoch(now), reason="cancelled by the OEM")
            )
        return self.fleet.list_assignments(ids=[assignment_id])[0]

    def _image_entry(self, path: str, hardware_id: str) -> TargetFile:
        """The Image repository's entry for ``path`` as an ECU of ``hardware_id`` sees it."""
        try:
            return self.image_view().lookup(path, hardware_id)
        except TargetNotFound as e:
            raise Invalid(f"not in the Image repository: {e}") from None
        except UptaneError as e:
            raise Invalid(str(e)) from None
        except (httpx.HTTPError, OSError) as e:
            raise Unavailable(f"the Image repository cannot be read: {e}") from None

    @staticmethod
    def _insert(conn: Connection, vid: int, ecu: Any, tf: TargetFile, now: datetime) -> int:
        """Record a new assignment; Conflict if the ECU already has one waiting."""
        a = inv.assignments
        busy = conn.execute(
            sa.select(a.c.id).where(a.c.ecu_id == ecu.id, a.c.state == PENDING)
        ).first()
        if busy is not None:
            raise Conflict(
                f"ECU {ecu.serial} already has pending assignment {busy.id}; cancel it first"
            )
        result = conn.execute(a.insert().values(**_assignment_values(vid, ecu, tf, now)))
        key = result.inserted_primary_key
        assert key is not None  # an INSERT of one row into a table with a primary key
        return int(key[0])

    # --- bundles ----------------------------------------------------------------------------

    def issue(self, conn: Connection, vid: int, vin: str, now: datetime) -> int | None:
        """If nothing is in flight, send every pending assignment as one bundle (§4.3
        partial-bundle installation: no new bundle until the last one is confirmed): the
        vehicle's next targets list them. Returns the new bundle's id, or None."""
        a, bundles = inv.assignments, inv.bundles
        busy = conn.execute(
            sa.select(bundles.c.id).where(bundles.c.vehicle_id == vid, bundles.c.state == IN_FLIGHT)
        ).first()
        if busy is not None:
            return None
        pending = conn.execute(
            sa.select(a.c.id).where(a.c.vehicle_id == vid, a.c.state == PENDING)
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
    def _bundle_targets(conn: Connection, bid: int) -> list[TargetFile]:
        """The targets entries of bundle ``bid``: one per image, naming every ECU of the
        bundle it is for (``custom.ecuIdentifiers``) and their hardware ids."""
        rows = conn.execute(
            sa.select(inv.assignments, inv.ecus.c.serial)
            .join(inv.ecus, inv.ecus.c.id == inv.assignments.c.ecu_id)
            .where(inv.assignments.c.bundle_id == bid)
            .order_by(inv.assignments.c.id)
        ).all()
        out: dict[str, TargetFile] = {}
        for r in rows:
            tf = out.setdefault(r.target_path, _target_of(r))
            tf.ecu_ids[r.serial] = r.hardware_id
            if r.hardware_id not in tf.hardware_ids:
                tf.hardware_ids.append(r.hardware_id)
        return list(out.values())

    def advance(
        self,
        conn: Connection,
        bundle_id: int,
        vid: int,
        vin: str,
        serials: dict[int, str],
        reports: dict[str, EcuVersionReport],
        now: datetime,
    ) -> dict[str, Any]:
        """Move the bundle in flight on after an accepted manifest (``reports`` by ECU
        serial; ``serials`` maps the vehicle's ECU ids to serials): an assignment is
        installed when its ECU reports the assigned image (:func:`same_image`), failed
        when the ECU reports an attack indicator that is new to it instead. The bundle
        ends when every assignment did; then the next bundle (or empty targets) goes out.

        An indicator is new to an assignment unless it is the assignment's
        ``stale_attack``: the one the ECU carried when the bundle went out, reported
        unchanged since (a Secondary repeats its last indicator until something succeeds,
        and that old one already failed, or predates, this bundle). A report with another
        indicator, or with none, ends the staleness: from then on any indicator fails it."""
        a = inv.assignments
        rows = conn.execute(sa.select(a).where(a.c.bundle_id == bundle_id)).all()
        states = [
            self._apply_report(conn, row, reports.get(serials.get(row.ecu_id, "")), now)
            for row in rows
        ]
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
        elif all(s == INSTALLED for s in states):
            event = CONFIRM
        else:
            return {"id": bundle_id, "state": IN_FLIGHT}
        final = BUNDLE.next(IN_FLIGHT, event, subject=f"bundle {bundle_id}")
        conn.execute(
            inv.bundles.update()
            .where(inv.bundles.c.id == bundle_id)
            .values(state=final, finished_at=epoch(now))
        )
        if self.issue(conn, vid, vin, now) is None:
            self.publisher.publish(conn, vid, vin, now, new_targets=[])
        return {"id": bundle_id, "state": final}

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
        elif report.attack and report.attack != stale:
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
