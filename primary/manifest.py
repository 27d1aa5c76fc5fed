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

import contextlib
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

import urllib3

from primary.cycle import TIME_FORMAT, Cycle
from primary.own import OwnSlots
from primary.secondaries import SecondaryPort, is_unreachable
from uptane.codec import codec_for
from uptane.errors import UptaneError
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    UnreachableEcu,
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
    """§5.4.2 step 1: every report, the signed manifest, the upload. A refused (4xx) or
    failed (5xx, transport) upload is kept in ``manifest_error`` with the server's reason:
    the cycle goes on with the metadata, and it ends with that error unless a later stage
    had one (:meth:`primary.agent.Primary.run_cycle`); the next cycle sends a new one."""
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
        cy.result.manifest_error = f"manifest not sent to {url}: {e}"
        cy.say(f"manifest not sent: {e}")
        return
    if 200 <= resp.status < 300:
        cy.result.manifest_sent = True
        cy.record.attacks.clear()  # reported: the Director has them now
        cy.save()
        cy.say(f"manifest sent ({len(reports) + 1} ECU reports, {encoding})")
        return
    verdict = "refused by" if 400 <= resp.status < 500 else "failed at"
    cy.result.manifest_error = (
        f"manifest {verdict} the Director (HTTP {resp.status}): {server_reason(answer)}"
    )
    cy.say(cy.result.manifest_error)


def server_reason(answer: bytes) -> str:
    """The reason a service gave in its answer: FastAPI's ``{"detail": ...}``, else the
    text; one line of at most 300 printable characters."""
    text = answer.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "detail" in doc:
        detail = doc["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
    return one_line(text, 300) or "no reason given"


def one_line(text: str, limit: int) -> str:
    """``text`` without control characters (each becomes a space), at most ``limit``
    characters: fit for a signed string field or a log line."""
    clean = "".join(" " if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c for c in text)
    return " ".join(clean.split())[:limit]


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
    signed = decode_report(raw, cy.limits, port.report_encoding(raw))
    check_report(signed, port.cfg.public_key, expected_ecu_id=port.serial, expected_nonce=nonce)
    return signed


def _runs(body: EcuVersionReport) -> str:
    return f"runs {body.installed.filename or 'nothing'}" + (
        f"; attack indicator: {body.attack}" if body.attack else ""
    )


def collect_reports(cy: Cycle, ports: Mapping[str, SecondaryPort]) -> Reports:
    """A fresh-nonce report from every Secondary. One that does not answer is skipped for
    the rest of the cycle; one whose report is refused is an attack the Primary reports;
    the manifest represents both by an ``unreachable_ecus`` entry."""
    reports: Reports = []
    for serial, port in ports.items():
        if serial in cy.result.unreachable:
            cy.result.not_reported[serial] = _unreachable_reason(cy, serial)
            continue  # named unreachable when its time was given
        try:
            signed = _checked_report(cy, port)
        except UptaneError as e:
            if is_unreachable(e):
                cy.unreachable(serial, e)
                cy.say(f"{serial}: unreachable ({e.message})")
                cy.result.not_reported[serial] = _unreachable_reason(cy, serial)
            else:
                cy.attack(e, f"report of {serial}")
                cy.say(f"{serial}: report refused ({e})")
                cy.result.not_reported[serial] = f"report refused: {e}"
            continue
        reports.append(signed)
        cy.seen(serial)
        cy.note_installed(serial, signed.signed)
        cy.say(f"{serial}: report received ({_runs(signed.signed)})")
    return reports


def _unreachable_reason(cy: Cycle, serial: str) -> str:
    why = cy.record.results.get(serial, {}).get("reason")
    return f"unreachable: {why}" if why else "unreachable"


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
    the Primary's own report, an attack indicator naming the attacks the Primary saw, and
    an ``unreachable_ecus`` entry for every configured Secondary it carries no report of
    (§5.3.2.1: every ECU represented; an unplugged ECU is not an attack, the entry says
    why and when it last answered)."""
    encoding = reports[0].encoding if reports else JSON
    kept = []
    for r in reports:
        if r.encoding == encoding:
            kept.append(r)
        else:
            serial = r.signed.ecu_id
            cy.say(f"{serial}: report in {r.encoding}, manifest in {encoding}: left out")
            cy.result.not_reported[serial] = f"report in {r.encoding}, manifest in {encoding}"
    kept.append(own_report(cy, own, encoding))
    notes = [f"{a['attack']}: {a['where']}" for a in cy.record.attacks]
    attack = "; ".join(notes)[:900] if notes else None
    cfg = cy.config
    vvm = build_vehicle_manifest(
        cfg.vin,
        cfg.ecu_serial,
        kept,
        cy.key(),
        encoding=encoding,
        attack=attack,
        unreachable=unreachable_entries(cy, {r.signed.ecu_id for r in kept}),
    )
    return vvm.to_bytes(encoding), encoding


def unreachable_entries(cy: Cycle, reported: set[str]) -> list[UnreachableEcu]:
    """One entry for every configured Secondary without a report in the manifest, in the
    configuration's order: the reason, and the last time it answered (omitted if never)."""
    out = []
    for s in cy.config.secondaries:
        if s.serial in reported:
            continue
        reason = one_line(cy.result.not_reported.get(s.serial, "no report"), 200) or "no report"
        seen = cy.record.last_seen.get(s.serial)
        last = None
        if seen is not None:
            with contextlib.suppress(ValueError):
                last = datetime.strptime(seen, TIME_FORMAT).replace(tzinfo=UTC)
        out.append(UnreachableEcu(s.serial, reason, last))
    return out


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
        cy.seen(ecu_id)
        cy.note_installed(ecu_id, body)
        cy.record.results.setdefault(ecu_id, {})["reported"] = body.installed.filename
        cy.say(f"{ecu_id}: report returned ({_runs(body)})")
    cy.save()


__all__ = [
    "EMPTY_SHA256",
    "build_manifest",
    "collect_results",
    "one_line",
    "own_report",
    "send_manifest",
    "server_reason",
    "sync_time",
    "unreachable_entries",
]
