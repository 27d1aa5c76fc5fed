"""Saved groups of vehicles: a name for a list of VINs, which a campaign can select."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director import inventory as inv
from director.common import VIN_RE, Conflict, Invalid, NotFound, epoch, iso

GROUP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: most vehicles one request may add to a group
MAX_GROUP_ADD = 100_000


def vehicle_ids(conn: Connection, vins: Iterable[str]) -> dict[str, int]:
    """The row ids of ``vins``; NotFound naming (some of) the VINs that are not registered."""
    vins = list(dict.fromkeys(vins))
    bad = [v for v in vins if not VIN_RE.match(v)]
    if bad:
        raise Invalid(f"bad VIN(s) {[v[:64] for v in bad[:4]]}")
    found: dict[str, int] = {}
    v = inv.vehicles
    for i in range(0, len(vins), 500):  # bounded IN lists
        chunk = vins[i : i + 500]
        found.update(
            (r.vin, int(r.id))
            for r in conn.execute(sa.select(v.c.vin, v.c.id).where(v.c.vin.in_(chunk))).all()
        )
    missing = [x for x in vins if x not in found]
    if missing:
        raise NotFound(f"unknown vehicle(s) {missing[:8]}" + (" ..." if len(missing) > 8 else ""))
    return found


class Groups:
    """Named groups of vehicles."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock

    def create(self, name: str, vins: Iterable[str]) -> dict[str, Any]:
        """A new group ``name`` of ``vins`` (Conflict if the name is taken)."""
        _check_name(name)
        vins = list(vins)
        with self.engine.begin() as conn:
            g = inv.groups
            if conn.execute(sa.select(g.c.id).where(g.c.name == name)).first() is not None:
                raise Conflict(f"group {name!r} exists; add vehicles to it instead")
            key = conn.execute(
                g.insert().values(name=name, created_at=epoch(self.clock()))
            ).inserted_primary_key
            assert key is not None
            self._add(conn, int(key[0]), vins)
        return self.show(name)

    def add(self, name: str, vins: Iterable[str]) -> dict[str, Any]:
        """Add ``vins`` to group ``name`` (those already in it stay once)."""
        with self.engine.begin() as conn:
            self._add(conn, self.group_id(conn, name), list(vins))
        return self.show(name)

    def remove(self, name: str, vin: str) -> dict[str, Any]:
        with self.engine.begin() as conn:
            gid = self.group_id(conn, name)
            vid = vehicle_ids(conn, [vin])[vin]
            gv = inv.group_vehicles
            conn.execute(gv.delete().where(gv.c.group_id == gid, gv.c.vehicle_id == vid))
        return self.show(name)

    def delete(self, name: str) -> dict[str, Any]:
        shown = self.show(name)
        with self.engine.begin() as conn:
            gid = self.group_id(conn, name)
            conn.execute(inv.group_vehicles.delete().where(inv.group_vehicles.c.group_id == gid))
            conn.execute(inv.groups.delete().where(inv.groups.c.id == gid))
        return shown

    def list_groups(self) -> list[dict[str, Any]]:
        g, gv = inv.groups, inv.group_vehicles
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(g, sa.func.count(gv.c.id).label("n"))
                .outerjoin(gv, gv.c.group_id == g.c.id)
                .group_by(g.c.id)
                .order_by(g.c.name)
            ).all()
        return [{"name": r.name, "vehicles": r.n, "created_at": iso(r.created_at)} for r in rows]

    def show(self, name: str) -> dict[str, Any]:
        g = inv.groups
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(g).where(g.c.name == name)).first()
            if row is None:
                raise NotFound(f"no group {name[:64]!r}")
            vins = self.vins(conn, int(row.id))
        return {"name": row.name, "created_at": iso(row.created_at), "vins": vins}

    @staticmethod
    def group_id(conn: Connection, name: str) -> int:
        row = conn.execute(sa.select(inv.groups.c.id).where(inv.groups.c.name == name)).first()
        if row is None:
            raise NotFound(f"no group {name[:64]!r}")
        return int(row.id)

    @staticmethod
    def vins(conn: Connection, gid: int) -> list[str]:
        gv, v = inv.group_vehicles, inv.vehicles
        return list(
            conn.execute(
                sa.select(v.c.vin)
                .join(gv, gv.c.vehicle_id == v.c.id)
                .where(gv.c.group_id == gid)
                .order_by(v.c.vin)
            ).scalars()
        )

    @staticmethod
    def _add(conn: Connection, gid: int, vins: list[str]) -> None:
        if len(vins) > MAX_GROUP_ADD:
            raise Invalid(f"at most {MAX_GROUP_ADD} vehicles in one request")
        ids = vehicle_ids(conn, vins)
        gv = inv.group_vehicles
        have = set(conn.execute(sa.select(gv.c.vehicle_id).where(gv.c.group_id == gid)).scalars())
        rows = [{"group_id": gid, "vehicle_id": i} for i in ids.values() if i not in have]
        if rows:
            conn.execute(gv.insert(), rows)


def _check_name(name: str) -> None:
    if not GROUP_RE.match(name):
        raise Invalid("a group name is 1-64 letters, digits, '.', '-' or '_'")


__all__ = ["GROUP_RE", "Groups", "vehicle_ids"]
