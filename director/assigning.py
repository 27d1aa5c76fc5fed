"""Recording assignments: the checks an assignment passes before it is stored (its image's
dependencies, conflicts and release counter: :mod:`director.dependencies`), and the rows
themselves. :class:`director.bundles.Bundles` sends what is recorded here.

An assignment that needs another ECU's assignment installed first records it in
``depends_on`` and goes out in a later bundle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from director import inventory as inv
from director.common import Conflict, Invalid, epoch
from director.dependencies import (
    DependencyRefused,
    EcuImage,
    Rule,
    Rules,
    Vehicle,
    check_downgrade,
    prerequisite,
)
from director.encrypting import wants_encryption
from director.lifecycle import ASSIGNMENT, IN_FLIGHT, INSTALLED, PENDING
from uptane.metadata import TargetFile

#: an assignment not yet ended (pending or in flight)
OPEN = (PENDING, IN_FLIGHT)


def _assignment_values(vid: int, ecu: Any, tf: TargetFile, now: datetime) -> dict[str, Any]:
    """A new assignment row: ``tf`` (the Image repository's entry) for ``ecu``, with its
    dependency rules (:mod:`director.dependencies`) kept beside the hardware ids."""
    rules = Rules.of(tf.custom_extra, tf.path).to_custom()
    return {
        "vehicle_id": vid,
        "ecu_id": ecu.id,
        "target_path": tf.path,
        "length": tf.length,
        "hashes": json.dumps(tf.hashes, sort_keys=True),
        "hardware_id": ecu.hardware_id,
        "release_counter": tf.release_counter,
        "image_custom": json.dumps(
            {"hardwareIds": tf.hardware_ids, "shallMatch": tf.shall_match, **rules},
            sort_keys=True,
        ),
        "state": ASSIGNMENT.initial,
        "created_at": epoch(now),
        "updated_at": epoch(now),
    }


def _conflicts(image_custom: str | None, path: str) -> tuple[Rule, ...]:
    """The conflict rules an assignment row keeps (malformed ones were refused on insert)."""
    try:
        return tuple(Rules.of(json.loads(image_custom or "{}"), path).conflicts)
    except (Invalid, ValueError):
        return ()


def read_vehicle(conn: Connection, vid: int, vin: str) -> tuple[Vehicle, dict[str, int]]:
    """What the dependency checks read of a vehicle: each ECU as its last report says, and
    its assignment pending or in flight; also those assignments' ids by ECU serial. An
    image installed through an assignment keeps that assignment's conflicts, and its
    release counter when the ECU's report carries none."""
    a, e = inv.assignments, inv.ecus
    rows = conn.execute(
        sa.select(a, e.c.serial, e.c.installed_path)
        .join(e, e.c.id == a.c.ecu_id)
        .where(a.c.vehicle_id == vid, a.c.state.in_((*OPEN, INSTALLED)))
        .order_by(a.c.id)
    ).all()
    by_installed = {
        r.serial: r for r in rows if r.state == INSTALLED and r.target_path == r.installed_path
    }
    installed: dict[str, EcuImage] = {}
    for ecu in conn.execute(sa.select(e).where(e.c.vehicle_id == vid).order_by(e.c.id)).all():
        via = by_installed.get(ecu.serial)
        rc = ecu.installed_release_counter
        if rc is None and via is not None:
            rc = via.release_counter
        conflicts = _conflicts(via.image_custom, via.target_path) if via is not None else ()
        installed[ecu.serial] = EcuImage(
            ecu.serial, ecu.hardware_id, ecu.installed_path, rc, conflicts
        )
    upcoming, ids = {}, {}
    for r in rows:
        if r.state in OPEN:
            upcoming[r.serial] = EcuImage(
                r.serial,
                r.hardware_id,
                r.target_path,
                r.release_counter,
                _conflicts(r.image_custom, r.target_path),
            )
            ids[r.serial] = int(r.id)
    return Vehicle(vin, installed, upcoming), ids


def insert_checked(
    conn: Connection,
    vid: int,
    vin: str,
    entries: Sequence[tuple[Any, TargetFile]],
    now: datetime,
    *,
    force: bool = False,
    campaign_id: int | None = None,
    encrypt: Mapping[str, bool | None] | None = None,
) -> list[int]:
    """Record assignments of one vehicle (ECU row, Image-repository entry) after the
    checks of :mod:`director.dependencies`, in an order where each prerequisite comes
    first; returns their ids in the order given. Raises (and records nothing) when one
    is refused. ``encrypt`` (by ECU serial) is an assignment's own choice of encryption;
    otherwise the OEM's rules decide (:func:`director.encrypting.wants_encryption`)."""
    sealed = {
        ecu.serial: encryption_choice(conn, ecu, tf, (encrypt or {}).get(ecu.serial))
        for ecu, tf in entries
    }
    vehicle, open_ids = read_vehicle(conn, vid, vin)
    rules = {e.serial: Rules.of(tf.custom_extra, tf.path) for e, tf in entries}
    also = {
        e.serial: EcuImage(
            e.serial,
            e.hardware_id,
            tf.path,
            tf.release_counter,
            tuple(rules[e.serial].conflicts),
        )
        for e, tf in entries
    }
    waits: dict[str, str | None] = {}
    for ecu, tf in entries:
        check_downgrade(vehicle.installed[ecu.serial], tf.path, tf.release_counter, force)
        others = {s: v for s, v in also.items() if s != ecu.serial}
        waits[ecu.serial] = prerequisite(
            vehicle, ecu.serial, tf.path, rules[ecu.serial], also=others
        )
    ids: dict[str, int] = {}
    pending = list(entries)
    insert = partial(_insert, conn, vid, now=now, campaign_id=campaign_id, forced=force)
    while pending:
        ready = [
            (e, tf) for e, tf in pending if waits[e.serial] not in also or waits[e.serial] in ids
        ]
        if not ready:
            raise DependencyRefused(
                f"the assignments to {sorted(also)[:8]} require each other; assign them"
                " in an order that can be installed"
            )
        for ecu, tf in ready:
            depends = _prerequisite_id(waits[ecu.serial], ids, open_ids)
            ids[ecu.serial] = insert(ecu, tf, depends_on=depends, encrypt=sealed[ecu.serial])
        pending = [p for p in pending if p[0].serial not in ids]
    return [ids[e.serial] for e, _ in entries]


def encryption_choice(conn: Connection, ecu: Any, tf: TargetFile, explicit: bool | None) -> bool:
    """Whether ``tf`` goes to ``ecu`` encrypted (issue 17): the assignment's choice or the
    OEM's rules; Invalid when it should be but the ECU has no encryption key registered."""
    if not wants_encryption(conn, tf.path, ecu.hardware_id, explicit):
        return False
    if ecu.encryption_key is None:
        raise Invalid(
            f"ECU {ecu.serial} has no encryption key registered, and {tf.path[:200]!r} goes to"
            " it encrypted: register its key (provisioning prints it) or assign it"
            " unencrypted"
        )
    return True


def _prerequisite_id(wait: str | None, new: dict[str, int], existing: dict[str, int]) -> int | None:
    """The assignment id an assignment waits for: made in the same request, or already
    pending or in flight (None: it waits for nothing)."""
    if wait is None:
        return None
    return new[wait] if wait in new else existing.get(wait)


def _insert(
    conn: Connection,
    vid: int,
    ecu: Any,
    tf: TargetFile,
    now: datetime,
    depends_on: int | None,
    *,
    campaign_id: int | None,
    forced: bool,
    encrypt: bool = False,
) -> int:
    """Record a new assignment; Conflict if the ECU already has one waiting."""
    a = inv.assignments
    busy = conn.execute(sa.select(a.c.id).where(a.c.ecu_id == ecu.id, a.c.state == PENDING)).first()
    if busy is not None:
        raise Conflict(
            f"ECU {ecu.serial} already has pending assignment {busy.id}; cancel it first"
        )
    values = _assignment_values(vid, ecu, tf, now)
    values.update(depends_on=depends_on, campaign_id=campaign_id, forced=forced, encrypt=encrypt)
    key = conn.execute(a.insert().values(**values)).inserted_primary_key
    assert key is not None  # an INSERT of one row into a table with a primary key
    return int(key[0])


__all__ = ["OPEN", "encryption_choice", "insert_checked", "read_vehicle"]
