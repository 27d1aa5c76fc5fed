"""What the OEM reads of a campaign: statistics per wave and per state, and each member's
outcome beside what its ECU reports running.

A member's outcome is its own state until it is assigned (``waiting``, ``skipped``,
``cancelled``), then its assignment's (``pending``, ``in_flight``, ``installed``,
``failed``, ``cancelled``). ``unreachable`` counts the failed ones that failed because the
Primary named their ECU unreachable past the deadline.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from director import inventory as inv
from director import paging
from director.common import iso
from director.lifecycle import (
    ASSIGNED,
    ASSIGNMENT,
    CANCELLED,
    FAILED,
    IN_FLIGHT,
    INSTALLED,
    PENDING,
    SKIPPED,
    WAITING,
)
from director.paging import Page
from uptane.identity import ImageIdentity, same_image

#: every outcome a member can have, in display order
OUTCOMES = (WAITING, PENDING, IN_FLIGHT, INSTALLED, FAILED, CANCELLED, SKIPPED)
#: the reason an assignment failed by the unreachable deadline starts with this
UNREACHABLE_PREFIX = "unreachable:"


@dataclass
class WaveStats:
    """One wave's members by outcome."""

    counts: Counter[str] = field(default_factory=Counter)
    unreachable: int = 0

    @property
    def size(self) -> int:
        """Members that were (or will be) sent: every outcome but ``skipped``."""
        return sum(n for s, n in self.counts.items() if s != SKIPPED)

    @property
    def failed(self) -> int:
        return self.counts[FAILED]

    @property
    def failed_share(self) -> float:
        return self.failed / self.size if self.size else 0.0

    @property
    def done(self) -> bool:
        """Every member's assignment ended (or it was never sent)."""
        return not any(self.counts[s] for s in (WAITING, PENDING, IN_FLIGHT))

    def to_dict(self, wave: int) -> dict[str, Any]:
        return {
            "wave": wave,
            "size": self.size,
            "states": {s: self.counts[s] for s in OUTCOMES},
            "unreachable": self.unreachable,
            "failure_rate": round(self.failed_share, 4),
            "done": self.done,
        }


def _outcome(member_state: str, assignment_state: str | None) -> str:
    if member_state == ASSIGNED and assignment_state in ASSIGNMENT.states:
        return str(assignment_state)
    return member_state


def wave_stats(conn: Connection, cid: int) -> dict[int, WaveStats]:
    """Every wave's statistics (wave 0: ECUs skipped at creation, in another campaign)."""
    m, a = inv.campaign_members, inv.assignments
    unreach = sa.case((a.c.reason.like(f"{UNREACHABLE_PREFIX}%"), 1), else_=0).label("unreach")
    rows = conn.execute(
        sa.select(m.c.wave, m.c.state, a.c.state.label("astate"), unreach, sa.func.count())
        .outerjoin(a, a.c.id == m.c.assignment_id)
        .where(m.c.campaign_id == cid)
        .group_by(m.c.wave, m.c.state, a.c.state, unreach)
    ).all()
    out: dict[int, WaveStats] = {}
    for wave, mstate, astate, unreachable, n in rows:
        stats = out.setdefault(int(wave), WaveStats())
        outcome = _outcome(mstate, astate)
        stats.counts[outcome] += int(n)
        if outcome == FAILED and unreachable:
            stats.unreachable += int(n)
    return out


def campaign_dict(camp: Any, stats: dict[int, WaveStats]) -> dict[str, Any]:
    """A campaign as the API shows it."""
    sizes = json.loads(camp.waves)
    totals: Counter[str] = Counter()
    for s in stats.values():
        totals.update(s.counts)
    return {
        "id": camp.id,
        "name": camp.name,
        "target": camp.target_path,
        "selection": json.loads(camp.selection),
        "state": camp.state,
        "reason": camp.reason,
        "current_wave": camp.current_wave,
        "waves": [
            {"planned": planned, **stats.get(i, WaveStats()).to_dict(i)}
            for i, planned in enumerate(sizes["sizes"], start=1)
        ],
        "waves_asked": sizes["asked"],
        "soak_seconds": camp.soak_seconds,
        "failure_threshold": camp.failure_threshold,
        "force": bool(camp.force),
        "totals": {s: totals[s] for s in OUTCOMES},
        "unreachable": sum(s.unreachable for s in stats.values()),
        "created_at": iso(camp.created_at),
        "updated_at": iso(camp.updated_at),
        "wave_started_at": iso(camp.wave_started_at),
        "wave_done_at": iso(camp.wave_done_at),
        "finished_at": iso(camp.finished_at),
    }


def _outcome_sql(m: sa.Table, a: sa.Table) -> sa.ColumnElement[Any]:
    """:func:`_outcome` in SQL, so that a listing filters by outcome before it pages."""
    return sa.case(
        (sa.and_(m.c.state == ASSIGNED, a.c.state.in_(ASSIGNMENT.states)), a.c.state),
        else_=m.c.state,
    )


def member_rows(
    conn: Connection,
    cid: int,
    *,
    wave: int | None = None,
    state: str | None = None,
    page: Page | None = None,
) -> Any:
    """Each member of campaign ``cid`` (of one wave, with one outcome), in order: a list,
    or with ``page`` one page of them (:mod:`director.paging`)."""
    m, a, e = inv.campaign_members, inv.assignments, inv.ecus
    q = (
        sa.select(
            m,
            inv.vehicles.c.vin,
            e.c.serial,
            e.c.installed_path,
            e.c.installed_length,
            e.c.installed_hashes,
            e.c.installed_release_counter,
            e.c.unreachable_since,
            a.c.state.label("astate"),
            a.c.reason.label("areason"),
            a.c.target_path,
            a.c.length,
            a.c.hashes,
        )
        .join(inv.vehicles, inv.vehicles.c.id == m.c.vehicle_id)
        .join(e, e.c.id == m.c.ecu_id)
        .outerjoin(a, a.c.id == m.c.assignment_id)
        .where(m.c.campaign_id == cid)
    )
    if wave is not None:
        q = q.where(m.c.wave == wave)
    if state is not None:
        q = q.where(_outcome_sql(m, a) == state)

    def render(r: Any) -> dict[str, Any]:
        return _member_dict(r, _outcome(r.state, r.astate))

    if page is not None:
        return paging.fetch(conn, q, m.c.id, page, render)
    return [render(r) for r in conn.execute(q.order_by(m.c.id)).all()]


def _member_dict(r: Any, outcome: str) -> dict[str, Any]:
    runs = None
    if r.installed_path is not None:
        runs = ImageIdentity(r.installed_path, r.installed_length, json.loads(r.installed_hashes))
    assigned = None
    if r.target_path is not None:
        assigned = ImageIdentity(r.target_path, r.length, json.loads(r.hashes))
    return {
        "id": r.id,
        "vin": r.vin,
        "ecu": r.serial,
        "wave": r.wave,
        "state": outcome,
        "reason": r.areason if r.state == ASSIGNED else r.reason,
        "assignment": r.assignment_id,
        # what the ECU's last report says it runs (nothing is taken from an unreachable one)
        "runs": None
        if runs is None
        else {"path": runs.path, "release_counter": r.installed_release_counter},
        "runs_target": runs is not None and assigned is not None and same_image(runs, assigned),
        "unreachable_since": iso(r.unreachable_since),
    }


__all__ = [
    "OUTCOMES",
    "UNREACHABLE_PREFIX",
    "WaveStats",
    "campaign_dict",
    "member_rows",
    "wave_stats",
]
