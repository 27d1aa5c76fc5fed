"""Campaigns in bounded transactions (issue 20): a campaign's members are recorded, a wave
is sent and an ended campaign's ECUs are released in batches, each batch one transaction,
so that manifests commit between them (at 100,000 vehicles a wave start in one
transaction held the database's write lock for minutes).

Each batch first locks the campaign row and reads there what is left to do, so that two
workers on one campaign (the request that created it, and the tick of this or another node
after a restart) take turns and never do a step twice; an ECU is assigned once in any case
(``campaign_members.active_ecu`` is unique, and a member leaves ``waiting`` in the batch
that assigns it). Where a campaign stands between batches is its state
(:data:`director.lifecycle.CAMPAIGN`):

- ``creating``: :meth:`Batches.record` records the selected ECUs as members, the vehicles
  after ``members_cursor`` first, about ``campaign_batch_members`` a batch (whole
  vehicles), each in its wave by position (``members_recorded``); an ECU in another active
  campaign is recorded ``skipped``. Then wave 1 goes out: ``launching``.
- ``launching``: :meth:`Batches.send` sends the waiting members of the current wave,
  ``campaign_batch_vehicles`` vehicles a batch: each member's assignment is checked and
  recorded and its vehicle's bundle issued, which signs that vehicle's metadata in the
  batch (never all vehicles in one transaction). Then ``running``.
- ended (``completed``, ``cancelled``) with ``released_at`` unset: :meth:`Batches.release`
  cancels the members not sent and the pending assignments, withdraws those in flight
  (their vehicles' metadata signed again, ``campaign_batch_vehicles`` a batch) and frees
  the ECUs for other campaigns.

The default sizes keep one batch's transaction well under 100 ms. Measured on this
2-core machine with other work running (load average about 5), SQLite, per transaction:
sending 2 vehicles a batch, median 27 ms and 95th percentile 72 ms (4 vehicles: 50 and
126 ms); recording 1,000 members, median 24 ms, at most 41 ms; cancelling 1,000 waiting
members, 12 ms. Sending costs about 9 ms a vehicle here, most of it signing the
vehicle's targets, snapshot and timestamp in every encoding, and each batch is followed by
a pause as long as itself (:func:`_breathing`), so a first wave of 100,000 vehicles takes
about half an hour here; manifests commit between its batches throughout.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director import inventory as inv
from director.assigning import insert_checked
from director.bundles import Bundles
from director.common import Conflict, Invalid, NotFound, epoch
from director.config import Config
from director.lifecycle import (
    ASSIGNED,
    ASSIGNMENT,
    CAMPAIGN,
    CANCEL,
    CANCELLED,
    CREATING,
    IN_FLIGHT,
    LAUNCH,
    LAUNCHING,
    MEMBER,
    PENDING,
    RECORDED,
    SENT,
    SKIP,
    SKIPPED,
    WAITING,
)
from uptane.metadata import TargetFile

_T = TypeVar("_T")

#: the pause after a batch, as a share of the time the batch took (at most MAX_PAUSE)
PAUSE_SHARE = 1.0
MAX_PAUSE = 0.1

#: how often a batch that lost a race for an ECU (PostgreSQL: another campaign took it
#: between the batch's read and its insert) is run again, reading the ECUs again
RETRIES = 5


@dataclass
class Selected:
    """The ECUs a campaign selects, ordered by vehicle then ECU, with the image entry for
    each hardware id."""

    ecus: list[Any] = field(default_factory=list)
    images: dict[str, TargetFile] = field(default_factory=dict)

    def __post_init__(self) -> None:
        #: each ECU's vehicle id, sorted (the selection's order), for :meth:`after`
        self.vehicle_ids = [int(r.vehicle_id) for r in self.ecus]

    def after(self, cursor: int | None, size: int) -> list[Any]:
        """About ``size`` ECUs of the vehicles after vehicle id ``cursor``, whole vehicles."""
        vids = self.vehicle_ids
        start = 0 if cursor is None else bisect.bisect_right(vids, cursor)
        end = min(start + size, len(vids))
        if end < len(vids):  # the rest of the last vehicle's ECUs too
            end = bisect.bisect_right(vids, vids[end - 1])
        return self.ecus[start:end]


def wave_of(position: int, sizes: list[int]) -> int:
    """The wave (1-based) of the member at ``position`` (0-based, skipped ones not
    counted): waves take their planned sizes in order; past them, the last wave."""
    done = 0
    for i, size in enumerate(sizes):
        done += size
        if position < done:
            return i + 1
    return len(sizes)


def locked(conn: Connection, cid: int) -> Any:
    """Campaign ``cid``'s row, locked for the transaction (NotFound if there is none)."""
    c = inv.campaigns
    camp = conn.execute(sa.select(c).where(c.c.id == cid).with_for_update()).first()
    if camp is None:
        raise NotFound(f"no campaign {cid}")
    return camp


class Batches:
    """The batch workers of :mod:`director.campaigns`: record, send, release."""

    def __init__(
        self, engine: Engine, bundles: Bundles, config: Config, clock: Callable[[], datetime]
    ) -> None:
        self.engine = engine
        self.bundles = bundles
        self.config = config
        self.clock = clock

    # --- recording members ------------------------------------------------------------------

    def record(self, cid: int, sel: Selected) -> int:
        """Record ``sel``'s ECUs as members of campaign ``cid`` (``creating``), batch by
        batch from where the campaign row says, then start wave 1 (``launching``).
        Returns how many batches it ran. Conflict if a batch kept losing races for its
        ECUs to other campaigns."""
        batches = 0
        while _breathing(self._record_retrying, cid, sel):
            batches += 1
        return batches

    def _record_retrying(self, cid: int, sel: Selected) -> bool:
        for _ in range(RETRIES):
            try:
                return self._record_batch(cid, sel)
            except sa.exc.IntegrityError:
                continue  # another campaign took one of these ECUs meanwhile: read again
        raise Conflict(
            f"campaign {cid}: other campaigns kept taking its ECUs while it was created;"
            " it goes on at the next tick, or cancel it"
        )

    def _record_batch(self, cid: int, sel: Selected) -> bool:
        """One batch of :meth:`record`; False once there was nothing left to record."""
        now = self.clock()
        c, m = inv.campaigns, inv.campaign_members
        with self.engine.begin() as conn:
            camp = locked(conn, cid)
            if camp.state != CREATING:
                return False
            chunk = sel.after(camp.members_cursor, self.config.campaign_batch_members)
            if not chunk:
                state = CAMPAIGN.next(CREATING, RECORDED, subject=f"campaign {cid}")
                conn.execute(c.update().where(c.c.id == cid).values(**_wave_start(state, 1, now)))
                return False
            taken = busy(conn, [int(r.id) for r in chunk], free_ended=True)
            sizes = json.loads(camp.waves)["sizes"]
            position, rows = int(camp.members_recorded), []
            for r in chunk:
                if r.id in taken:
                    why = f"in active campaign {taken[r.id]}"
                    rows.append(_member(cid, r, 0, SKIPPED, why, None, now))
                    continue
                rows.append(_member(cid, r, wave_of(position, sizes), WAITING, None, r.id, now))
                position += 1
            conn.execute(m.insert(), rows)
            conn.execute(
                c.update()
                .where(c.c.id == cid)
                .values(
                    members_cursor=int(chunk[-1].vehicle_id),
                    members_recorded=position,
                    updated_at=epoch(now),
                )
            )
        return True

    # --- sending a wave ---------------------------------------------------------------------

    def start_wave(self, cid: int, wave: int) -> bool:
        """Move running campaign ``cid`` to ``launching`` wave ``wave``; False if it moved
        meanwhile."""
        now = self.clock()
        c = inv.campaigns
        with self.engine.begin() as conn:
            camp = locked(conn, cid)
            if not CAMPAIGN.allows(camp.state, LAUNCH) or int(camp.current_wave) != wave - 1:
                return False
            state = CAMPAIGN.next(camp.state, LAUNCH, subject=f"campaign {cid}")
            conn.execute(c.update().where(c.c.id == cid).values(**_wave_start(state, wave, now)))
        return True

    def send(self, cid: int, images: dict[str, TargetFile]) -> list[str]:
        """Send the current wave of campaign ``cid`` (``launching``), batch by batch, then
        move it to ``running``. Returns what happened (nothing if another worker finished
        the wave or the campaign ended meanwhile)."""
        after = 0
        while True:
            step = _breathing(self._send_batch, cid, after, images)
            if isinstance(step, list):
                return step
            after = step

    def _send_batch(self, cid: int, after: int, images: dict[str, TargetFile]) -> int | list[str]:
        """One batch of :meth:`send`: the waiting members of the wave after member id
        ``after`` (whole vehicles); returns the last member id sent, or, once none is left,
        the wave's event lines."""
        now = self.clock()
        with self.engine.begin() as conn:
            camp = locked(conn, cid)
            if camp.state != LAUNCHING:
                return []
            wave = int(camp.current_wave)
            groups = _next_vehicles(conn, cid, wave, after, self.config.campaign_batch_vehicles)
            if not groups:
                return self._wave_sent(conn, cid, wave, now)
            for members in groups:
                self._launch_vehicle(conn, camp, members, images, now)
            c = inv.campaigns
            conn.execute(c.update().where(c.c.id == cid).values(updated_at=epoch(now)))
            return int(groups[-1][-1].member)

    @staticmethod
    def _wave_sent(conn: Connection, cid: int, wave: int, now: datetime) -> list[str]:
        c, m = inv.campaigns, inv.campaign_members
        state = CAMPAIGN.next(LAUNCHING, SENT, subject=f"campaign {cid}")
        conn.execute(c.update().where(c.c.id == cid).values(state=state, updated_at=epoch(now)))
        n = conn.execute(
            sa.select(sa.func.count())
            .select_from(m)
            .where(m.c.campaign_id == cid, m.c.wave == wave)
        ).scalar_one()
        return [f"campaign {cid}: wave {wave} sent to {n} ECU(s)"]

    def _launch_vehicle(
        self,
        conn: Connection,
        camp: Any,
        members: list[Any],
        images: dict[str, TargetFile],
        now: datetime,
    ) -> None:
        """Send one vehicle's waiting members: their assignments, checked like any other
        (one refused: the vehicle's members are ``skipped`` with the reason), and the
        vehicle's bundle."""
        m = inv.campaign_members
        vid, vin = int(members[0].vehicle_id), str(members[0].vin)
        try:
            with conn.begin_nested():
                entries = [(r, _image(images, r.hardware_id)) for r in members]
                ids = insert_checked(
                    conn, vid, vin, entries, now, force=bool(camp.force), campaign_id=int(camp.id)
                )
                self.bundles.issue(conn, vid, vin, now)
        except (Conflict, Invalid, NotFound) as e:
            conn.execute(
                m.update()
                .where(m.c.id.in_([r.member for r in members]), m.c.state == WAITING)
                .values(
                    state=MEMBER.next(WAITING, SKIP), reason=str(e)[:1000], updated_at=epoch(now)
                )
            )
            return
        for r, aid in zip(members, ids, strict=True):
            conn.execute(
                m.update()
                .where(m.c.id == r.member)
                .values(
                    state=MEMBER.next(WAITING, LAUNCH), assignment_id=aid, updated_at=epoch(now)
                )
            )

    # --- releasing an ended campaign ------------------------------------------------------

    def release(self, cid: int) -> int:
        """Free the ECUs of ended campaign ``cid``: members not sent are cancelled, pending
        assignments cancelled, those in flight withdrawn (the vehicles get targets without
        the image), ``active_ecu`` cleared; batch by batch, then ``released_at`` set.
        Returns how many batches it ran."""
        batches = 0
        for step in (self._release_batch, self._withdraw_batch):
            after: int | None = 0
            while (after := _breathing(step, cid, after or 0)) is not None:
                batches += 1
        now = self.clock()
        c = inv.campaigns
        with self.engine.begin() as conn:
            conn.execute(
                c.update()
                .where(c.c.id == cid, c.c.released_at.is_(None))
                .values(released_at=epoch(now))
            )
        return batches

    def _release_batch(self, cid: int, after: int) -> int | None:
        """The ``campaign_batch_members`` members after member id ``after``: cancel those
        waiting and the pending assignments (of a cancelled campaign), free those not in
        flight. Returns the last member id, or None when none was left."""
        now = self.clock()
        m, a = inv.campaign_members, inv.assignments
        with self.engine.begin() as conn:
            camp = locked(conn, cid)
            ids = list(
                conn.execute(
                    sa.select(m.c.id)
                    .where(m.c.campaign_id == cid, m.c.id > after)
                    .order_by(m.c.id)
                    .limit(self.config.campaign_batch_members)
                ).scalars()
            )
            if not ids:
                return None
            if camp.state == CANCELLED:
                conn.execute(
                    m.update()
                    .where(m.c.id.in_(ids), m.c.state == WAITING)
                    .values(
                        state=MEMBER.next(WAITING, CANCEL),
                        reason="campaign cancelled",
                        updated_at=epoch(now),
                    )
                )
                mine = sa.select(m.c.assignment_id).where(m.c.id.in_(ids), m.c.state == ASSIGNED)
                conn.execute(
                    a.update()
                    .where(a.c.id.in_(mine), a.c.state == PENDING)
                    .values(
                        state=ASSIGNMENT.next(PENDING, CANCEL),
                        reason=_why(cid),
                        updated_at=epoch(now),
                    )
                )
            flying = sa.exists().where(a.c.id == m.c.assignment_id, a.c.state == IN_FLIGHT)
            conn.execute(
                m.update()
                .where(m.c.id.in_(ids), m.c.active_ecu.is_not(None), ~flying)
                .values(active_ecu=None)
            )
            return int(ids[-1])

    def _withdraw_batch(self, cid: int, after: int) -> int | None:
        """The members still holding their ECU after member id ``after`` (their assignment
        was in flight), ``campaign_batch_vehicles`` of them: of a cancelled campaign, the
        assignments still in flight are withdrawn (their vehicles' metadata signed again);
        then their ECUs are freed. Returns the last member id, or None when none was left."""
        now = self.clock()
        m, a = inv.campaign_members, inv.assignments
        with self.engine.begin() as conn:
            camp = locked(conn, cid)
            rows = conn.execute(
                sa.select(m.c.id, a.c.id.label("aid"), a.c.state)
                .outerjoin(a, a.c.id == m.c.assignment_id)
                .where(m.c.campaign_id == cid, m.c.active_ecu.is_not(None), m.c.id > after)
                .order_by(m.c.id)
                .limit(self.config.campaign_batch_vehicles)
            ).all()
            if not rows:
                return None
            flying = [int(r.aid) for r in rows if r.state == IN_FLIGHT]
            if camp.state == CANCELLED and flying:
                self.bundles.withdraw(conn, flying, _why(cid), now)
            conn.execute(
                m.update().where(m.c.id.in_([int(r.id) for r in rows])).values(active_ecu=None)
            )
            return int(rows[-1].id)


def _breathing(batch: Callable[..., _T], *args: Any) -> _T:
    """Run one batch, then pause as long as it took (at most :data:`MAX_PAUSE`). Without
    the pause the next batch takes SQLite's write lock again at once, and a manifest
    waiting in SQLite's busy handler (which sleeps between its tries) almost never gets
    it: measured here, manifests sent during a 600-vehicle wave waited 4.2 s (median) to
    commit; with the pause, 6 ms (median), 38 ms (95th percentile), 87 ms at most. Costs
    the wave up to half its speed."""
    started = time.monotonic()
    out = batch(*args)
    time.sleep(min(MAX_PAUSE, PAUSE_SHARE * (time.monotonic() - started)))
    return out


def _why(cid: int) -> str:
    return f"withdrawn: campaign {cid} cancelled by the OEM"


def _wave_start(state: str, wave: int, now: datetime) -> dict[str, Any]:
    """The campaign row's values as wave ``wave`` starts going out."""
    return {
        "state": state,
        "current_wave": wave,
        "wave_started_at": epoch(now),
        "wave_done_at": None,
        "updated_at": epoch(now),
    }


def _image(images: dict[str, TargetFile], hardware_id: str) -> TargetFile:
    try:
        return images[hardware_id]
    except KeyError:
        raise Invalid(f"the campaign's image is not for hardware {hardware_id!r}") from None


def busy(conn: Connection, ids: list[int], *, free_ended: bool = False) -> dict[int, int]:
    """Of ECU ids ``ids``, those in an active campaign: ECU id -> campaign id. A member of
    a campaign that ended (its release not finished yet) does not count; ``free_ended``:
    it is freed here too."""
    m, c = inv.campaign_members, inv.campaigns
    found: dict[int, int] = {}
    for i in range(0, len(ids), 500):  # bounded IN lists
        rows = conn.execute(
            sa.select(m.c.id, m.c.active_ecu, m.c.campaign_id, c.c.state)
            .join(c, c.c.id == m.c.campaign_id)
            .where(m.c.active_ecu.in_(ids[i : i + 500]))
        ).all()
        ended = [int(r.id) for r in rows if r.state in CAMPAIGN.final]
        if ended and free_ended:
            conn.execute(m.update().where(m.c.id.in_(ended)).values(active_ecu=None))
        found.update(
            (int(r.active_ecu), int(r.campaign_id)) for r in rows if r.state not in CAMPAIGN.final
        )
    return found


def _next_vehicles(
    conn: Connection, cid: int, wave: int, after: int, vehicles: int
) -> list[list[Any]]:
    """The waiting members of wave ``wave`` after member id ``after``, grouped by vehicle
    (a vehicle's members are consecutive: recorded in one batch), at most ``vehicles``
    whole vehicles."""
    m = inv.campaign_members
    limit = vehicles * 4
    while True:
        rows = conn.execute(
            sa.select(m.c.id.label("member"), inv.ecus, inv.vehicles.c.vin)
            .join(inv.ecus, inv.ecus.c.id == m.c.ecu_id)
            .join(inv.vehicles, inv.vehicles.c.id == m.c.vehicle_id)
            .where(m.c.campaign_id == cid, m.c.wave == wave, m.c.state == WAITING, m.c.id > after)
            .order_by(m.c.id)
            .limit(limit)
        ).all()
        groups = list(_by_vehicle(rows))
        if len(rows) < limit:
            return groups[:vehicles]
        if len(groups) > 1:  # the last vehicle may go on past the limit: next batch
            return groups[: min(vehicles, len(groups) - 1)]
        limit *= 2


def _by_vehicle(rows: Sequence[Any]) -> Iterator[list[Any]]:
    group: list[Any] = []
    for r in rows:
        if group and r.vehicle_id != group[-1].vehicle_id:
            yield group
            group = []
        group.append(r)
    if group:
        yield group


def _member(
    cid: int, ecu: Any, wave: int, state: str, reason: str | None, active: int | None, now: datetime
) -> dict[str, Any]:
    return {
        "campaign_id": cid,
        "vehicle_id": ecu.vehicle_id,
        "ecu_id": ecu.id,
        "wave": wave,
        "state": state,
        "reason": reason,
        "active_ecu": active,
        "updated_at": epoch(now),
    }


__all__ = ["Batches", "Selected", "busy", "locked", "wave_of"]
