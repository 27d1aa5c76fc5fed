"""Campaigns: one image for a selection of ECUs across the fleet, sent in waves.

A campaign selects ECUs (:class:`CampaignSpec`: a hardware id, an explicit VIN list, a
saved group, or several of them, all of which must hold), splits them into waves (by count
or by percentage; the last wave takes the rest) and sends one wave at a time: each member's
assignment goes through the same checks and bundles as any other
(:func:`director.assigning.insert_checked`, :meth:`director.bundles.Bundles.issue`). A wave
is done when every member's assignment ended; the next one starts ``soak_seconds`` later.
When the share of a wave's members that failed passes ``failure_threshold``, the campaign
halts (no further wave) until the OEM resumes it, which accepts that wave's failures.
Cancelling takes back every assignment not installed: pending ones are cancelled, ones in
flight are withdrawn (the vehicle gets targets without the image); what each ECU ends up
running is what its reports say (the members listing shows it).

An ECU is in at most one active campaign: ``campaign_members.active_ecu`` is unique and
cleared when the campaign ends. States: :data:`director.lifecycle.CAMPAIGN` and
:data:`director.lifecycle.MEMBER`. :meth:`Campaigns.tick` moves running campaigns on; the
service runs it every second, and tests call it with their clock.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director import inventory as inv
from director.assigning import insert_checked
from director.bundles import Bundles
from director.campaignview import campaign_dict, member_rows, wave_stats
from director.common import HWID_RE, Conflict, Invalid, NotFound, Unavailable, epoch
from director.groups import Groups, vehicle_ids
from director.lifecycle import (
    ASSIGNED,
    ASSIGNMENT,
    CAMPAIGN,
    CANCEL,
    FINISH,
    HALT,
    IN_FLIGHT,
    LAUNCH,
    MEMBER,
    PAUSE,
    PENDING,
    RESUME,
    RUNNING,
    SKIP,
    SKIPPED,
    WAITING,
)
from uptane.metadata import TargetFile
from uptane.paths import check_target_path

#: most waves a campaign may have
MAX_WAVES = 100
#: longest soak time between waves: 30 days
MAX_SOAK = 30 * 24 * 3600


@dataclass
class CampaignSpec:
    """What the OEM asks for: the image, the selection, the waves and the halt rule."""

    target: str
    hardware_id: str | None = None
    vins: list[str] | None = None
    group: str | None = None
    #: each ``{"percent": p}`` (0 < p <= 100) or ``{"count": n}`` (n >= 1); the last wave
    #: takes whatever is left. None: one wave.
    waves: list[dict[str, float]] | None = None
    soak_seconds: int = 0
    #: the share of a wave's members that may fail (0..1) before the campaign halts
    failure_threshold: float = 0.1
    force: bool = False
    name: str | None = None

    def check(self) -> None:
        check_target_path(self.target)
        if self.hardware_id is None and self.vins is None and self.group is None:
            raise Invalid("select ECUs: a hardware_id, a list of vins, a group, or several")
        if self.hardware_id is not None and not HWID_RE.match(self.hardware_id):
            raise Invalid(f"bad hardware id {self.hardware_id[:64]!r}")
        if not 0 <= self.failure_threshold <= 1:
            raise Invalid("failure_threshold is a share of a wave: 0 to 1")
        if not 0 <= self.soak_seconds <= MAX_SOAK:
            raise Invalid(f"soak_seconds is 0 to {MAX_SOAK}")
        if self.name is not None and not 0 < len(self.name) <= 128:
            raise Invalid("a campaign name is 1-128 characters")
        for w in self.waves or []:
            if len(w) != 1 or not {"percent", "count"} >= set(w):
                raise Invalid('a wave is {"percent": P} or {"count": N}')
        if self.waves is not None and not 0 < len(self.waves) <= MAX_WAVES:
            raise Invalid(f"1 to {MAX_WAVES} waves")


def _wave_size(w: dict[str, float], n: int) -> int:
    if "count" in w:
        c = w["count"]
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise Invalid("a wave's count is a whole number from 1")
        return c
    p = w["percent"]
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 100:
        raise Invalid("a wave's percent is above 0 and at most 100")
    return round(n * float(p) / 100)


def wave_sizes(waves: Sequence[dict[str, float]] | None, n: int) -> list[int]:
    """How many of ``n`` members each wave takes, in order: a count, or a percentage of all
    ``n`` (rounded); the last wave takes whatever is left. Empty waves are dropped (one
    wave of everything when none is left)."""
    asked: list[dict[str, float]] = list(waves) if waves else [{"percent": 100.0}]
    sizes, done = [], 0
    for i, w in enumerate(asked):
        size = _wave_size(w, n)  # checked for the last wave too, which takes the rest
        if i == len(asked) - 1:
            size = n - done
        size = min(size, n - done)
        sizes.append(size)
        done += size
    return [s for s in sizes if s] or [n]


@dataclass
class _Selected:
    """The ECUs a spec selects, with the image entry for each hardware id."""

    ecus: list[Any] = field(default_factory=list)
    images: dict[str, TargetFile] = field(default_factory=dict)
    busy: dict[int, int] = field(default_factory=dict)  # ECU id -> its active campaign


class Campaigns:
    """Campaigns: create, pause, resume, cancel, their statistics, and :meth:`tick`."""

    def __init__(
        self,
        engine: Engine,
        bundles: Bundles,
        groups: Groups,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.bundles = bundles
        self.groups = groups
        self.clock = clock
        self._tick_lock = threading.Lock()

    # --- creating -----------------------------------------------------------------------------

    def create(self, spec: CampaignSpec) -> dict[str, Any]:
        """Record a campaign and its members, and send its first wave. Selected ECUs that
        are in another active campaign are skipped and listed."""
        spec.check()
        now = self.clock()
        with self.engine.connect() as conn:
            sel = self._select(conn, spec)
        try:
            with self.engine.begin() as conn:
                cid = self._insert(conn, spec, sel, now)
                self._launch(conn, cid, 1, sel.images, now)
        except sa.exc.IntegrityError:
            raise Conflict(
                "another campaign took one of these ECUs meanwhile; list the campaigns and"
                " create this one again"
            ) from None
        out = self.get(cid)
        with self.engine.connect() as conn:
            members = member_rows(conn, cid)
        out["created"] = [m["assignment"] for m in members if m["assignment"] is not None]
        out["skipped"] = [
            {"vin": m["vin"], "ecu": m["ecu"], "reason": m["reason"]}
            for m in members
            if m["state"] == SKIPPED
        ]
        return out

    def _select(self, conn: Connection, spec: CampaignSpec) -> _Selected:
        """The ECUs of ``spec``'s vehicles whose hardware id the image is for (and equals
        ``spec.hardware_id`` when given), by vehicle, with their images."""
        e, v = inv.ecus, inv.vehicles
        q = sa.select(e, v.c.vin).join(v, v.c.id == e.c.vehicle_id).order_by(e.c.vehicle_id, e.c.id)
        if spec.hardware_id is not None:
            q = q.where(e.c.hardware_id == spec.hardware_id)
        chosen: set[int] | None = None
        if spec.vins is not None:
            chosen = set(vehicle_ids(conn, spec.vins).values())
        if spec.group is not None:
            members = set(
                vehicle_ids(
                    conn, self.groups.vins(conn, self.groups.group_id(conn, spec.group))
                ).values()
            )
            chosen = members if chosen is None else chosen & members
        rows = [r for r in conn.execute(q).all() if chosen is None or r.vehicle_id in chosen]
        sel = _Selected()
        for hw in sorted({r.hardware_id for r in rows}):
            try:
                sel.images[hw] = self.bundles.image_entry(spec.target, hw)
            except Invalid:
                if spec.hardware_id is not None:
                    raise
        sel.ecus = [r for r in rows if r.hardware_id in sel.images]
        if not sel.ecus:
            raise Invalid(f"no selected ECU has a hardware id {spec.target!r} is for")
        m = inv.campaign_members
        ids = [r.id for r in sel.ecus]
        for i in range(0, len(ids), 500):
            q2 = sa.select(m.c.active_ecu, m.c.campaign_id).where(
                m.c.active_ecu.in_(ids[i : i + 500])
            )
            sel.busy.update((int(a), int(c)) for a, c in conn.execute(q2).all())
        return sel

    @staticmethod
    def _insert(conn: Connection, spec: CampaignSpec, sel: _Selected, now: datetime) -> int:
        """The campaign row and one member per selected ECU, in waves."""
        free = [r for r in sel.ecus if r.id not in sel.busy]
        sizes = wave_sizes(spec.waves, len(free))
        c = inv.campaigns
        key = conn.execute(
            c.insert().values(
                name=spec.name or f"{spec.target} ({spec.hardware_id or 'selection'})",
                target_path=spec.target,
                hardware_id=spec.hardware_id,
                selection=json.dumps(
                    {"hardware_id": spec.hardware_id, "vins": spec.vins, "group": spec.group},
                    sort_keys=True,
                ),
                waves=json.dumps({"asked": spec.waves, "sizes": sizes}, sort_keys=True),
                soak_seconds=spec.soak_seconds,
                failure_threshold=spec.failure_threshold,
                force=spec.force,
                state=CAMPAIGN.initial,
                current_wave=0,
                created_at=epoch(now),
                updated_at=epoch(now),
            )
        ).inserted_primary_key
        assert key is not None
        cid = int(key[0])
        rows, wave, left = [], 1, sizes[0]
        for r in free:
            if left == 0:
                wave += 1
                left = sizes[wave - 1]
            left -= 1
            rows.append(_member(cid, r, wave, MEMBER.initial, None, r.id, now))
        for r in sel.ecus:
            if r.id in sel.busy:
                why = f"in active campaign {sel.busy[r.id]}"
                rows.append(_member(cid, r, 0, SKIPPED, why, None, now))
        if rows:
            conn.execute(inv.campaign_members.insert(), rows)
        return cid

    # --- waves --------------------------------------------------------------------------------

    def _launch(
        self, conn: Connection, cid: int, wave: int, images: dict[str, TargetFile], now: datetime
    ) -> list[str]:
        """Send wave ``wave``: each waiting member's assignment, checked like any other
        (one refused is ``skipped`` with the reason), and the vehicles' bundles."""
        c, m = inv.campaigns, inv.campaign_members
        camp = conn.execute(sa.select(c).where(c.c.id == cid)).one()
        rows = conn.execute(
            sa.select(m.c.id.label("member"), inv.ecus, inv.vehicles.c.vin)
            .join(inv.ecus, inv.ecus.c.id == m.c.ecu_id)
            .join(inv.vehicles, inv.vehicles.c.id == m.c.vehicle_id)
            .where(m.c.campaign_id == cid, m.c.wave == wave, m.c.state == WAITING)
            .order_by(m.c.id)
        ).all()
        by_vehicle: dict[int, list[Any]] = defaultdict(list)
        for r in rows:
            by_vehicle[int(r.vehicle_id)].append(r)
        for vid, members in by_vehicle.items():
            self._launch_vehicle(conn, camp, vid, members, images, now)
        conn.execute(
            c.update()
            .where(c.c.id == cid)
            .values(
                current_wave=wave,
                wave_started_at=epoch(now),
                wave_done_at=None,
                updated_at=epoch(now),
            )
        )
        return [f"campaign {cid}: wave {wave} sent to {len(rows)} ECU(s)"]

    def _launch_vehicle(
        self,
        conn: Connection,
        camp: Any,
        vid: int,
        members: list[Any],
        images: dict[str, TargetFile],
        now: datetime,
    ) -> None:
        m = inv.campaign_members
        vin = str(members[0].vin)
        entries = [(r, images[r.hardware_id]) for r in members]
        try:
            with conn.begin_nested():
                ids = insert_checked(
                    conn, vid, vin, entries, now, force=bool(camp.force), campaign_id=int(camp.id)
                )
                self.bundles.issue(conn, vid, vin, now)
        except (Conflict, Invalid, NotFound) as e:
            for r in members:
                conn.execute(
                    m.update()
                    .where(m.c.id == r.member)
                    .values(
                        state=MEMBER.next(WAITING, SKIP),
                        reason=str(e)[:1000],
                        updated_at=epoch(now),
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

    # --- the OEM's moves ------------------------------------------------------------------------

    def pause(self, cid: int) -> dict[str, Any]:
        """No further wave goes out; what was sent carries on."""
        return self._move(cid, PAUSE, "paused by the OEM")

    def resume(self, cid: int) -> dict[str, Any]:
        """Carry on; after a halt, the halted wave's failures are accepted."""
        return self._move(cid, RESUME, None)

    def cancel(self, cid: int) -> dict[str, Any]:
        """End the campaign: members not yet sent are cancelled, pending assignments
        cancelled, assignments in flight withdrawn (the vehicles get targets without the
        image); installed ones stay. Its ECUs are free for other campaigns."""
        now = self.clock()
        a, m = inv.assignments, inv.campaign_members
        with self.engine.begin() as conn:
            camp = self._locked(conn, cid)
            state = CAMPAIGN.next(camp.state, CANCEL, subject=f"campaign {cid}")
            why = f"withdrawn: campaign {cid} cancelled by the OEM"
            conn.execute(
                m.update()
                .where(m.c.campaign_id == cid, m.c.state == WAITING)
                .values(
                    state=MEMBER.next(WAITING, CANCEL),
                    reason="campaign cancelled",
                    updated_at=epoch(now),
                )
            )
            assigned = sa.select(m.c.assignment_id).where(
                m.c.campaign_id == cid, m.c.state == ASSIGNED
            )
            conn.execute(
                a.update()
                .where(a.c.id.in_(assigned), a.c.state == PENDING)
                .values(state=ASSIGNMENT.next(PENDING, CANCEL), reason=why, updated_at=epoch(now))
            )
            flying = conn.execute(
                sa.select(a.c.id).where(a.c.id.in_(assigned), a.c.state == IN_FLIGHT)
            ).scalars()
            self.bundles.withdraw(conn, list(flying), why, now)
            self._end(conn, cid, state, "cancelled by the OEM", now)
        return self.get(cid)

    def _move(self, cid: int, event: str, reason: str | None) -> dict[str, Any]:
        now = self.clock()
        c = inv.campaigns
        with self.engine.begin() as conn:
            camp = self._locked(conn, cid)
            state = CAMPAIGN.next(camp.state, event, subject=f"campaign {cid}")
            values: dict[str, Any] = {"state": state, "updated_at": epoch(now), "reason": reason}
            if event == RESUME:
                values["resumed_wave"] = camp.current_wave
            conn.execute(c.update().where(c.c.id == cid).values(**values))
        return self.get(cid)

    @staticmethod
    def _locked(conn: Connection, cid: int) -> Any:
        c = inv.campaigns
        camp = conn.execute(sa.select(c).where(c.c.id == cid).with_for_update()).first()
        if camp is None:
            raise NotFound(f"no campaign {cid}")
        return camp

    @staticmethod
    def _end(conn: Connection, cid: int, state: str, reason: str, now: datetime) -> None:
        """Record the campaign's final state and free its ECUs for other campaigns."""
        c, m = inv.campaigns, inv.campaign_members
        conn.execute(
            c.update()
            .where(c.c.id == cid)
            .values(state=state, reason=reason, finished_at=epoch(now), updated_at=epoch(now))
        )
        conn.execute(m.update().where(m.c.campaign_id == cid).values(active_ecu=None))

    # --- moving on ------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> list[str]:
        """Move every running campaign on: halt one whose current wave's failure rate
        passed its threshold, and once a wave is done and has soaked, send the next one
        (or finish). Returns what happened, one line each."""
        now = now or self.clock()
        with self._tick_lock:
            with self.engine.connect() as conn:
                running = conn.execute(
                    sa.select(inv.campaigns).where(inv.campaigns.c.state == RUNNING)
                ).all()
            events: list[str] = []
            for camp in running:
                try:
                    events += self._tick_one(camp, now)
                except Unavailable as e:  # the Image repository: try again next tick
                    events.append(f"campaign {camp.id}: next wave waits: {e}")
            return events

    def _tick_one(self, camp: Any, now: datetime) -> list[str]:
        sizes = json.loads(camp.waves)["sizes"]
        cid, wave = int(camp.id), int(camp.current_wave)
        images = None
        if wave < len(sizes):  # the image may be needed for the next wave: read it outside
            images = self._images(camp)
        with self.engine.begin() as conn:
            camp = self._locked(conn, cid)
            if camp.state != RUNNING or int(camp.current_wave) != wave:
                return []  # moved meanwhile
            stats = wave_stats(conn, cid).get(wave)
            if (
                stats is not None
                and wave != camp.resumed_wave
                and stats.failed_share > camp.failure_threshold
            ):
                reason = (
                    f"wave {wave}: {stats.failed} of {stats.size} failed"
                    f" ({stats.failed_share:.1%}), over the {camp.failure_threshold:.1%} threshold;"
                    " resume to accept and go on, or cancel"
                )
                self._halt(conn, cid, reason, now)
                return [f"campaign {cid} halted: {reason}"]
            if stats is not None and not stats.done:
                return []
            return self._next(conn, camp, sizes, images, now)

    def _next(
        self, conn: Connection, camp: Any, sizes: list[int], images: Any, now: datetime
    ) -> list[str]:
        """The current wave is done: soak, then the next wave, or finish after the last."""
        c, cid, wave = inv.campaigns, int(camp.id), int(camp.current_wave)
        if camp.wave_done_at is None:
            conn.execute(c.update().where(c.c.id == cid).values(wave_done_at=epoch(now)))
            done_at = epoch(now)
        else:
            done_at = int(camp.wave_done_at)
        if wave >= len(sizes):
            state = CAMPAIGN.next(RUNNING, FINISH, subject=f"campaign {cid}")
            self._end(conn, cid, state, f"all {len(sizes)} wave(s) done", now)
            return [f"campaign {cid} completed"]
        if epoch(now) < done_at + int(camp.soak_seconds):
            return []
        return self._launch(conn, cid, wave + 1, images or {}, now)

    def _images(self, camp: Any) -> dict[str, TargetFile]:
        """The campaign's image for each hardware id of its members still waiting."""
        m = inv.campaign_members
        with self.engine.connect() as conn:
            hws = conn.execute(
                sa.select(inv.ecus.c.hardware_id)
                .join(m, m.c.ecu_id == inv.ecus.c.id)
                .where(m.c.campaign_id == camp.id, m.c.state == WAITING)
                .distinct()
            ).scalars()
            hardware = list(hws)
        return {hw: self.bundles.image_entry(camp.target_path, hw) for hw in hardware}

    @staticmethod
    def _halt(conn: Connection, cid: int, reason: str, now: datetime) -> None:
        c = inv.campaigns
        state = CAMPAIGN.next(RUNNING, HALT, subject=f"campaign {cid}")
        conn.execute(
            c.update()
            .where(c.c.id == cid)
            .values(state=state, reason=reason, updated_at=epoch(now))
        )

    # --- reading --------------------------------------------------------------------------------

    def get(self, cid: int) -> dict[str, Any]:
        """One campaign with its statistics per wave and per state."""
        with self.engine.connect() as conn:
            camp = conn.execute(sa.select(inv.campaigns).where(inv.campaigns.c.id == cid)).first()
            if camp is None:
                raise NotFound(f"no campaign {cid}")
            return campaign_dict(camp, wave_stats(conn, cid))

    def list_campaigns(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            camps = conn.execute(sa.select(inv.campaigns).order_by(inv.campaigns.c.id)).all()
            return [campaign_dict(c, wave_stats(conn, int(c.id))) for c in camps]

    def members(
        self, cid: int, *, wave: int | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Each member: its VIN, ECU, wave, outcome, and what the ECU reports running."""
        self.get(cid)  # NotFound
        with self.engine.connect() as conn:
            return member_rows(conn, cid, wave=wave, state=state)


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


__all__ = ["MAX_WAVES", "CampaignSpec", "Campaigns", "wave_sizes"]
