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
:data:`director.lifecycle.MEMBER`. :meth:`Campaigns.tick` moves campaigns on; the service
runs it every second, and tests call it with their clock.

Recording the members, sending a wave and releasing an ended campaign's ECUs run in
batches, each its own transaction (:mod:`director.campaignbatches`), so that manifests
commit between them at any fleet size; a campaign left half-created, with a half-sent wave
or half-released by a stopped process is finished by the next tick.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director import inventory as inv
from director.bundles import Bundles
from director.campaignbatches import Batches, Selected, busy, locked
from director.campaignview import campaign_dict, member_rows, wave_stats
from director.common import HWID_RE, Invalid, NotFound, Unavailable, epoch
from director.groups import Groups, vehicle_ids
from director.lifecycle import (
    CAMPAIGN,
    CANCEL,
    CREATING,
    FINISH,
    HALT,
    LAUNCHING,
    PAUSE,
    RESUME,
    RUNNING,
    SKIPPED,
    WAITING,
)
from director.paging import Page
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
        #: the batch sizes are the Director's settings (bundles share its configuration)
        self.batches = Batches(engine, bundles, bundles.config, clock)
        self._tick_lock = threading.Lock()

    # --- creating -----------------------------------------------------------------------------

    def create(self, spec: CampaignSpec) -> dict[str, Any]:
        """Record a campaign and its members, and send its first wave, in batches
        (:mod:`director.campaignbatches`). Selected ECUs that are in another active
        campaign are skipped and listed."""
        spec.check()
        now = self.clock()
        with self.engine.connect() as conn:
            sel = self._select(conn, spec)
            free = len(sel.ecus) - len(busy(conn, [int(r.id) for r in sel.ecus]))
        with self.engine.begin() as conn:
            cid = self._insert(conn, spec, wave_sizes(spec.waves, free), now)
        self.batches.record(cid, sel)
        self.batches.send(cid, sel.images)
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

    def _select(self, conn: Connection, spec: CampaignSpec) -> Selected:
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
        if chosen is None:  # by hardware id (indexed), or every ECU
            rows = list(conn.execute(q).all())
        else:  # the chosen vehicles' ECUs only, never the whole fleet's
            ids, rows = sorted(chosen), []
            for i in range(0, len(ids), 500):  # bounded IN lists, in vehicle order
                rows += conn.execute(q.where(e.c.vehicle_id.in_(ids[i : i + 500]))).all()
        images: dict[str, TargetFile] = {}
        for hw in sorted({r.hardware_id for r in rows}):
            try:
                images[hw] = self.bundles.image_entry(spec.target, hw)
            except Invalid:
                if spec.hardware_id is not None:
                    raise
        sel = Selected([r for r in rows if r.hardware_id in images], images)
        if not sel.ecus:
            raise Invalid(f"no selected ECU has a hardware id {spec.target!r} is for")
        return sel

    @staticmethod
    def _insert(conn: Connection, spec: CampaignSpec, sizes: list[int], now: datetime) -> int:
        """The campaign row, ``creating``: its members are recorded next, in batches."""
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
                members_cursor=None,
                members_recorded=0,
                created_at=epoch(now),
                updated_at=epoch(now),
            )
        ).inserted_primary_key
        assert key is not None
        return int(key[0])

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
        image); installed ones stay. Its ECUs are free for other campaigns. The campaign
        is marked in one transaction, its members in batches."""
        now = self.clock()
        with self.engine.begin() as conn:
            camp = locked(conn, cid)
            state = CAMPAIGN.next(camp.state, CANCEL, subject=f"campaign {cid}")
            self._end(conn, cid, state, "cancelled by the OEM", now)
        self.batches.release(cid)
        return self.get(cid)

    def _move(self, cid: int, event: str, reason: str | None) -> dict[str, Any]:
        now = self.clock()
        c = inv.campaigns
        with self.engine.begin() as conn:
            camp = locked(conn, cid)
            state = CAMPAIGN.next(camp.state, event, subject=f"campaign {cid}")
            values: dict[str, Any] = {"state": state, "updated_at": epoch(now), "reason": reason}
            if event == RESUME:
                values["resumed_wave"] = camp.current_wave
            conn.execute(c.update().where(c.c.id == cid).values(**values))
        return self.get(cid)

    @staticmethod
    def _end(conn: Connection, cid: int, state: str, reason: str, now: datetime) -> None:
        """Record the campaign's final state; its members are released next, in batches
        (:meth:`director.campaignbatches.Batches.release`)."""
        c = inv.campaigns
        conn.execute(
            c.update()
            .where(c.c.id == cid)
            .values(
                state=state,
                reason=reason,
                finished_at=epoch(now),
                updated_at=epoch(now),
                released_at=None,
            )
        )

    # --- moving on ------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> list[str]:
        """Move every campaign on: finish one half-created, half-sent or half-released
        (a stopped process left it so); halt one whose current wave's failure rate passed
        its threshold; once a wave is done and has soaked, send the next one (or finish).
        Returns what happened, one line each."""
        now = now or self.clock()
        c = inv.campaigns
        busy_states = (CREATING, LAUNCHING, RUNNING)
        with self._tick_lock:
            with self.engine.connect() as conn:
                todo = conn.execute(
                    sa.select(c)
                    .where(
                        sa.or_(
                            c.c.state.in_(busy_states),
                            sa.and_(c.c.state.in_(CAMPAIGN.final), c.c.released_at.is_(None)),
                        )
                    )
                    .order_by(c.c.id)
                ).all()
            events: list[str] = []
            for camp in todo:
                try:
                    events += self._tick_one(camp, now)
                except Unavailable as e:  # the Image repository: try again next tick
                    events.append(f"campaign {camp.id}: next wave waits: {e}")
            return events

    def _tick_one(self, camp: Any, now: datetime) -> list[str]:
        cid = int(camp.id)
        if camp.state in CAMPAIGN.final:
            self.batches.release(cid)
            return []
        if camp.state == CREATING:
            return self._resume_creating(camp, now)
        if camp.state == LAUNCHING:
            return self.batches.send(cid, self._images(camp))
        return self._tick_running(camp, now)

    def _resume_creating(self, camp: Any, now: datetime) -> list[str]:
        """A campaign whose members a stopped process left half-recorded: select again
        (the stored selection), go on from the cursor, send wave 1. One whose selection
        is gone (a group deleted, no ECU left) is cancelled with the reason."""
        cid, chosen = int(camp.id), json.loads(camp.selection)
        spec = CampaignSpec(
            target=camp.target_path,
            hardware_id=chosen.get("hardware_id"),
            vins=chosen.get("vins"),
            group=chosen.get("group"),
            force=bool(camp.force),
        )
        try:
            with self.engine.connect() as conn:
                sel = self._select(conn, spec)
        except (Invalid, NotFound) as e:
            with self.engine.begin() as conn:
                if locked(conn, cid).state != CREATING:
                    return []
                state = CAMPAIGN.next(CREATING, CANCEL, subject=f"campaign {cid}")
                self._end(conn, cid, state, f"could not be created: {e}"[:1000], now)
            self.batches.release(cid)
            return [f"campaign {cid} cancelled: could not be created: {e}"]
        self.batches.record(cid, sel)
        return self.batches.send(cid, sel.images)

    def _tick_running(self, camp: Any, now: datetime) -> list[str]:
        sizes = json.loads(camp.waves)["sizes"]
        cid, wave = int(camp.id), int(camp.current_wave)
        images = None
        if wave < len(sizes):  # the image may be needed for the next wave: read it outside
            images = self._images(camp)
        with self.engine.begin() as conn:
            camp = locked(conn, cid)
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
            step = self._next(conn, camp, sizes, now)
        if step == "finished":
            self.batches.release(cid)
            return [f"campaign {cid} completed"]
        if step == "launch" and self.batches.start_wave(cid, wave + 1):
            return self.batches.send(cid, images or {})
        return []

    def _next(self, conn: Connection, camp: Any, sizes: list[int], now: datetime) -> str | None:
        """The current wave is done: soak, then the next wave (``launch``), or finish
        after the last (``finished``); None while it soaks."""
        c, cid, wave = inv.campaigns, int(camp.id), int(camp.current_wave)
        if camp.wave_done_at is None:
            conn.execute(c.update().where(c.c.id == cid).values(wave_done_at=epoch(now)))
            done_at = epoch(now)
        else:
            done_at = int(camp.wave_done_at)
        if wave >= len(sizes):
            state = CAMPAIGN.next(RUNNING, FINISH, subject=f"campaign {cid}")
            self._end(conn, cid, state, f"all {len(sizes)} wave(s) done", now)
            return "finished"
        if epoch(now) < done_at + int(camp.soak_seconds):
            return None
        return "launch"

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
        self,
        cid: int,
        *,
        wave: int | None = None,
        state: str | None = None,
        page: Page | None = None,
    ) -> Any:
        """Each member: its VIN, ECU, wave, outcome, and what the ECU reports running (a
        list, or one page of it with ``page``)."""
        self.get(cid)  # NotFound
        with self.engine.connect() as conn:
            return member_rows(conn, cid, wave=wave, state=state, page=page)


__all__ = ["MAX_WAVES", "CampaignSpec", "Campaigns", "wave_sizes"]
