"""The cycle's first stage (§5.4.2 step 1): version reports in, the vehicle version
manifest out; and its last (step 7): the reports the ECUs return after an install.

:func:`send_manifest` asks every Secondary for a signed report with a fresh nonce (the
time goes first, so the report's time is current), checks each one with the core
(:func:`uptane.manifest.check_report`), adds the Primary's own signed report, signs the
manifest and POSTs it to the Director. :func:`collect_results` asks each ECU that
installed or refused an image this cycle for a new report. What a checked report says
an ECU runs replaces what the Primary believed (:meth:`primary.cycle.Cycle.note_installed`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime

import urllib3

from primary.cycle import Cycle
from primary.own import OwnSlots
from primary.secondaries import SecondaryPort, is_unreachable
from uptane.codec import codec_for, sniff
from uptane.errors import UptaneError
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    build_vehicle_manifest,
    check_report,
    decode_report,
)
from uptane.metadata import JSON

#: an empty installed image (an ECU that runs nothing the Director knows yet)
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

Reports = list[SignedManifest[EcuVersionReport]]


def send_manifest(
    cy: Cycle,
    ports: Mapping[str, SecondaryPort],
    own: OwnSlots | None,
    http: urllib3.PoolManager,
) -> None:
    """§5.4.2 step 1: every report, the signed manifest, the upload."""
    reports = collect_reports(cy, ports)
    body, encoding = build_manifest(cy, reports, own)
    url = cy.config.manifest_url
    ctype = codec_for(encoding).media_type
    try:
        resp = http.request(
            "POST",
            url,
            body=body,
            headers={"Content-Type": ctype},
            preload_content=False,
            redirect=False,
        )
        try:
            answer = resp.read(4096)
        finally:
            resp.release_conn()
    except Exception as e:  # transport failure: the cycle goes on with the metadata
        cy.result.manifest_error = f"{url}: {e}"
        cy.say(f"manifest not sent: {e}")
        return
    if 200 <= resp.status < 300:
        cy.result.manifest_sent = True
        cy.record.attacks.clear()  # reported: the Director has them now
        cy.save()
        cy.say(f"manifest sent ({len(reports) + 1} ECU reports, {encoding})")
    else:
        cy.result.manifest_error = f"HTTP {resp.status}: {answer[:300].decode('utf-8', 'replace')}"
        cy.say(f"manifest refused by the Director: {cy.result.manifest_error}")


def sync_time(cy: Cycle, ports: Mapping[str, SecondaryPort]) -> datetime:
    """§5.4.2 steps 2 and 5, before the reports: the cycle's time, and each Secondary's
    clock set from it (signed, when time servers are configured), so that each report
    carries fresh verified time. A Secondary that does not answer is unreachable for the
    rest of the cycle."""
    now, lost = cy.time.sync(ports)
    for line in cy.time.notes:
        cy.say(f"time: {line}")
    for e in cy.time.attacks:
        cy.attack(e, "time from a time server")
    cy.time.attacks.clear()
    for serial, e in lost.items():
        cy.unreachable(serial, e)
        cy.say(f"{serial}: unreachable ({e.message})")
    return now


def _checked_report(cy: Cycle, port: SecondaryPort) -> SignedManifest[EcuVersionReport]:
    """One report of ``port``'s ECU for a fresh nonce, checked against its configured key."""
    nonce = secrets.token_bytes(16)
    raw = port.report(nonce)
    signed = decode_report(raw, cy.limits, sniff(raw).name)
    check_report(signed, port.cfg.public_key, expected_ecu_id=port.serial, expected_nonce=nonce)
    return signed


def _runs(body: EcuVersionReport) -> str:
    return f"runs {body.installed.filename or 'nothing'}" + (
        f"; attack indicator: {body.attack}" if body.attack else ""
    )


def collect_reports(cy: Cycle, ports: Mapping[str, SecondaryPort]) -> Reports:
    """A fresh-nonce report from every Secondary; an unreachable one is named in the
    manifest and skipped for the rest of the cycle."""
    reports: Reports = []
    for serial, port in ports.items():
        if serial in cy.result.unreachable:
            continue  # named unreachable when its time was given
        try:
            signed = _checked_report(cy, port)
        except UptaneError as e:
            if is_unreachable(e):
                cy.unreachable(serial, e)
                cy.say(f"{serial}: unreachable ({e.message})")
            else:
                cy.attack(e, f"report of {serial}")
                cy.say(f"{serial}: report refused ({e})")
            continue
        reports.append(signed)
        cy.note_installed(serial, signed.signed)
        cy.say(f"{serial}: report received ({_runs(signed.signed)})")
    return reports


def own_report(cy: Cycle, own: OwnSlots | None, encoding: str) -> SignedManifest[EcuVersionReport]:
    """The Primary's own signed report: what its boot record says it runs (or, without
    slots, what it last recorded), and the latest attack it saw."""
    serial, record = cy.config.ecu_serial, cy.record
    if own is not None:
        info = own.installed()
        if info is None:
            record.installed.pop(serial, None)
        elif not info.identity().same_image(record.installed.get(serial)):
            record.installed[serial] = info.to_target()
    target = record.installed.get(serial)
    if target is not None:
        installed = InstalledImage.from_target(target)
        counter = target.release_counter
    else:
        installed = InstalledImage("", 0, {"sha256": EMPTY_SHA256})
        counter = None
    attack = None
    if record.attacks:
        last = record.attacks[-1]
        more = f" (+{len(record.attacks) - 1} more)" if len(record.attacks) > 1 else ""
        attack = (f"{last['attack']}: {last['where']}: {last['message']}"[:900]) + more
    report = SignedManifest(
        EcuVersionReport(
            serial,
            installed,
            cy.time.now().replace(microsecond=0),
            nonce=secrets.token_bytes(16),
            release_counter=counter,
            attack=attack,
        ),
        encoding=encoding,
    )
    report.sign(cy.key())
    return report


def build_manifest(cy: Cycle, reports: Reports, own: OwnSlots | None) -> tuple[bytes, str]:
    """The signed vehicle version manifest and its encoding: every Secondary's report
    as it was signed (the manifest takes the encoding of the first one, JSON if none),
    the Primary's own report, and an attack indicator naming the attacks the Primary
    saw and the Secondaries that did not answer (drop-request)."""
    encoding = reports[0].encoding if reports else JSON
    kept = []
    for r in reports:
        if r.encoding == encoding:
            kept.append(r)
        else:
            cy.say(f"{r.signed.ecu_id}: report in {r.encoding}, manifest in {encoding}: left out")
    kept.append(own_report(cy, own, encoding))
    notes = [f"{a['attack']}: {a['where']}" for a in cy.record.attacks]
    notes += [f"drop-request: ECU {e} unreachable" for e in cy.result.unreachable]
    attack = "; ".join(notes)[:900] if notes else None
    cfg = cy.config
    vvm = build_vehicle_manifest(
        cfg.vin, cfg.ecu_serial, kept, cy.key(), encoding=encoding, attack=attack
    )
    return vvm.to_bytes(encoding), encoding


def collect_results(cy: Cycle, ports: Mapping[str, SecondaryPort]) -> None:
    """§5.4.2 step 7: each Secondary that installed or refused an image this cycle returns
    a signed report of what it runs now (checked like the manifest's); the next manifest
    asks again with its own nonce."""
    for ecu_id in sorted(set(cy.result.installed) | set(cy.result.failed)):
        port = ports.get(ecu_id)
        if port is None:
            continue
        try:
            body = _checked_report(cy, port).signed
        except UptaneError as e:
            cy.say(f"{ecu_id}: no report returned ({e})")
            continue
        cy.note_installed(ecu_id, body)
        cy.record.results.setdefault(ecu_id, {})["reported"] = body.installed.filename
        cy.say(f"{ecu_id}: report returned ({_runs(body)})")
    cy.save()


__all__ = [
    "EMPTY_SHA256",
    "build_manifest",
    "collect_results",
    "own_report",
    "send_manifest",
    "sync_time",
]
