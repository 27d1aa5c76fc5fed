"""The delivery stage (§5.4.2 steps 5-6): each downloaded image to its ECU.

For a Secondary, over its link (:class:`primary.secondaries.SecondaryPort`): its status
first (an ECU that already runs the image is not sent it again; a transfer in progress
is continued), then the metadata it needs (:class:`primary.forward.Forwarder`; its time
was set at the start of the cycle), then the image from the offset it acknowledged, then
fresh signed time (:meth:`primary.timekeeping.Timekeeper.refresh`: the ECU checks the
approval's expiry against it) and INSTALL. The Primary's own image goes
to its own slots (:class:`primary.own.OwnSlots`), one more target of the same kind.

Each move of an update goes through :mod:`primary.lifecycle` and is saved before the next
exchange, so a crash at any point is recovered by the next cycle: nothing is sent or
installed twice (the status is asked first).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from primary.config import DIRECTOR
from primary.cycle import Cycle
from primary.forward import Forwarder
from primary.lifecycle import Event, Step, advance
from primary.own import OwnSlots
from primary.secondaries import (
    MetadataFile,
    SecondaryPort,
    is_unreachable,
    status_has,
    transfer_of,
)
from primary.state import Pending
from primary.verify import Trusts
from uptane.delta import produced_image
from uptane.encryption import transport_target
from uptane.errors import UptaneError
from uptane.identity import same_image
from uptane.trust import check_not_expired


def deliver(
    cy: Cycle,
    trusts: Trusts,
    ports: Mapping[str, SecondaryPort],
    own: OwnSlots | None,
    now: datetime,
) -> None:
    """Every downloaded update to its ECU: the Secondaries in serial order, then the
    Primary itself; afterwards the images no pending update needs are deleted."""
    forwarder = Forwarder(cy.config, cy.state, cy.fetcher, trusts, cy.time)
    own_id = cy.config.ecu_serial
    for ecu_id, pending in sorted(cy.record.pending.items()):
        if ecu_id == own_id:
            continue
        if ecu_id in cy.result.unreachable:
            cy.say(f"{ecu_id}: unreachable this cycle, its update waits")
            continue
        to_secondary(cy, ports[ecu_id], pending, forwarder, now)
    mine = cy.record.pending.get(own_id)
    if mine is not None:
        to_own_slots(cy, own, mine, trusts)
    cy.state.prune_images(
        [transport_target(p.target, p.ecu_id) for p in cy.record.pending.values()]
    )
    cy.save()


def to_secondary(
    cy: Cycle, port: SecondaryPort, p: Pending, forwarder: Forwarder, now: datetime
) -> None:
    """One update to one Secondary (see the module doc)."""
    if p.step == Step.APPROVED:
        return  # not downloaded yet
    ecu_id = p.ecu_id
    try:
        encoding = port.metadata_encoding()  # negotiated on the link (HELLO/WELCOME)
    except UptaneError as e:
        if not is_unreachable(e):
            raise
        cy.unreachable(ecu_id, e)
        cy.say(f"{ecu_id}: unreachable ({e.message}); will retry next cycle")
        cy.save()
        return
    try:
        files = forwarder.files_for(port.cfg, encoding)
    except UptaneError as e:
        # the repository did not give what the Secondary needs: retry next cycle
        cy.stopped(e, f"metadata for {ecu_id}")
        cy.say(f"{ecu_id}: metadata to forward unavailable: {e}")
        return
    try:
        if _transfer(cy, port, p, files, now):
            cy.time.refresh(port)  # the approval is checked against the latest time
            for line in cy.time.notes:
                cy.say(f"time: {line}")
            port.install(p.target.path)
    except UptaneError as e:
        if is_unreachable(e):
            cy.unreachable(ecu_id, e)
            cy.say(f"{ecu_id}: unreachable ({e.message}); will retry next cycle")
            cy.save()
        else:
            cy.refused(p, e)
        return
    # INSTALL answered without an error (or the ECU already ran it): the image is in its
    # new slot
    cy.installed(p)


def _transfer(
    cy: Cycle, port: SecondaryPort, p: Pending, files: list[MetadataFile], now: datetime
) -> bool:
    """The metadata and the image, idempotently; False when the ECU already runs the
    image (nothing to send or install). What goes over the link is what the Primary
    downloaded for this ECU: the image, its ciphertext, a delta (issue 17)."""
    wire = transport_target(p.target, p.ecu_id)
    ecu_id, path, length = p.ecu_id, p.target.path, wire.length
    # idempotence: ask first, so a restart never sends or installs twice (a delta is
    # installed once its full image runs)
    status = port.status()
    if status_has(status, produced_image(p.target).path):
        cy.say(f"{ecu_id}: already has {path}")
        return False
    held = transfer_of(status, path, length)
    resume = same_image(cy.sending(ecu_id), p.target)
    if held and not resume:
        # STATUS names only the file and its length: a partial of another image under the
        # same name (the Director changed the content, or this Primary has no record of
        # sending it) is not continued: the metadata goes again and the image restarts
        # at byte 0
        cy.say(f"{ecu_id}: its partial {path} is of another image: starting again")
        held = 0
    if held:
        # the Secondary still holds the verified metadata and part of the image (a dropped
        # link): resending metadata would restart it, so only continue
        cy.say(f"{ecu_id}: continuing the transfer at byte {held}")
    else:
        cy.say(f"{ecu_id}: sending {len(files)} metadata file(s)")
        port.send_metadata(files)
    if held < length:
        # which image this transfer is, recorded before any byte of it goes
        cy.set_sending(ecu_id, p.target)
        start = port.send_image(
            cy.state.image_path(wire),
            path,
            length,
            progress=cy.progress(f"send {path} to {ecu_id}"),
            resume=resume,
        )
        if start:
            cy.say(f"{ecu_id}: resumed the image transfer at byte {start}")
    advance(p, Event.SENT)
    cy.save()
    return True


def to_own_slots(cy: Cycle, own: OwnSlots | None, p: Pending, trusts: Trusts | None = None) -> None:
    """The Primary's own update into its own slots; with ``trusts``, the Director targets
    that approved it must still be unexpired against fresh verified time (as at a
    Secondary's INSTALL)."""
    if p.step == Step.APPROVED:
        return
    if own is None:
        cy.refused(p, UptaneError("this Primary has no slots configured"))
        return
    try:
        slots, runs = own.holds(p.target)
        if not runs and trusts is not None:
            _check_unexpired(cy, trusts)
        if not runs:
            cy.say(f"{p.ecu_id}: installing {p.target.path} into slot {slots.inactive_slot()}")
            wire = transport_target(p.target, p.ecu_id)  # a ciphertext encrypted for it
            own.install(slots, p.target, cy.state.image_path(wire))
    except UptaneError as e:
        cy.refused(p, e)
        return
    cy.installed(p)


def _check_unexpired(cy: Cycle, trusts: Trusts) -> None:
    """The freeze check of §5.4.4.6 step 5 again at install, on the Primary's own update,
    against the latest verified time (one more time round when signed time is set)."""
    cy.time.refresh_own()
    for line in cy.time.notes:
        cy.say(f"time: {line}")
    targets = trusts[DIRECTOR].targets
    if targets is not None:
        check_not_expired(targets.signed, cy.time.now(), role="targets", repository=DIRECTOR)


__all__ = ["deliver", "to_own_slots", "to_secondary"]
