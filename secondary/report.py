"""What a Secondary says about itself: the signed ECU version report (GET_REPORT,
§5.4.2.1.2) and the link's STATUS.

The report carries the nonce, the latest time, the image in the booted slot with its
release counter (from the boot record, so it always describes the bytes that boot), the
attack indicator of the last error and the last install result.
"""

from __future__ import annotations

from datetime import datetime
from hashlib import sha256
from typing import Any

from hardware.messages import Status
from hardware.slot_lifecycle import SlotState
from hardware.slots import SlotStatus
from secondary.ecu import EcuSettings
from secondary.transfer import Transfer
from uptane.errors import MalformedInput
from uptane.keys import Signer
from uptane.manifest import EcuVersionReport, InstalledImage, SignedManifest

#: the image a blank ECU reports: zero bytes
EMPTY = InstalledImage("", 0, {"sha256": sha256(b"").hexdigest()})


def version_report(
    ecu: EcuSettings,
    key: Signer,
    st: SlotStatus,
    *,
    latest_time: datetime,
    nonce: bytes,
    attack: str | None,
) -> bytes:
    """§5.4.2.1.2: the ECU version report for ``nonce``, signed with ``key``."""
    if not nonce:
        raise MalformedInput("GET_REPORT needs a non-empty nonce")
    installed = (
        InstalledImage(st.installed.filename, st.installed.length, dict(st.installed.hashes))
        if st.installed is not None
        else EMPTY
    )
    body = EcuVersionReport(
        ecu_id=ecu.ecu_serial,
        installed=installed,
        latest_time=latest_time,
        nonce=bytes(nonce),
        release_counter=st.release_counter,
        attack=attack or None,
        unrecognized=_slot_details(ecu, st),
    )
    signed = SignedManifest(body, encoding=ecu.encoding)
    signed.sign(key)
    return signed.to_bytes()


def _slot_details(ecu: EcuSettings, st: SlotStatus) -> dict[str, Any]:
    """The hardware id, the slot that runs, the slot on trial and the last install."""
    extra: dict[str, Any] = {"hardware_id": ecu.hardware_id}
    booted = st.booted or (st.active if st.installed is not None else None)
    if booted is not None:
        extra["slot"] = booted
    if st.trial is not None:
        extra["trial_slot"] = st.trial
    last = st.last_result
    if last is not None:
        extra["install_result"] = {
            "outcome": last.outcome.value,
            "filename": last.filename or "",
            "code": last.code,
            "attack": last.attack,
        }
    return extra


def link_status(
    st: SlotStatus, x: Transfer | None, *, verified: bool, attack: int | None
) -> Status:
    """STATUS: what the ECU is doing (receiving an image, ready to install it, running a
    trial, holding verified metadata, idle), the transfer's offset and what it runs."""
    if x is not None:
        state = "ready" if x.offset == x.total else "receiving"
    elif st.state in (SlotState.TRIAL, SlotState.TRIAL_BOOTED):
        state = "trial"
    elif verified:
        state = "verified"
    else:
        state = "idle"
    return Status(
        state=state,
        image_filename=x.filename if x else None,
        image_total=x.total if x else None,
        image_offset=x.offset if x else 0,
        installed=st.installed.filename if st.installed else None,
        attack=attack,
    )
