"""Validly signed manifests with hostile values (issue 15): the Director never answers 500,
on SQLite and PostgreSQL. Found before: a report with counter or installed length >= 2**63
made ``_record_manifest`` raise ``OverflowError`` (SQLite) or ``NumericValueOutOfRange``
(PostgreSQL), and NUL in an attack indicator ``ValueError`` (PostgreSQL): 500 for every
manifest of that vehicle.

Now the core's policy refuses them at decode (400, naming the field), the vehicle's next
genuine manifest is accepted, other vehicles are not slowed (no batch of the writer takes
the savepoint path), and a value that reached the database anyway fails its manifest alone
with 422 and a logged reason."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from oem import FACTORY, Vehicle, make_vehicle, manifest

from uptane.codec import codec_for
from uptane.encoding import der
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    UnreachableEcu,
    VehicleVersionManifest,
)
from uptane.metadata import COMPACT_DER, DER, JSON

ENCODINGS = [JSON, DER, COMPACT_DER]


@contextlib.contextmanager
def old_der_integers() -> Iterator[None]:
    """DER INTEGERs of up to 9 bytes (about 2**71), as the profile took before the policy:
    how a signer with the old code writes a counter of 2**63. Only around encoding: the
    Director in this process decodes with the real profile."""
    saved = der.MAX_INTEGER_BYTES
    der.MAX_INTEGER_BYTES = 9
    try:
        yield
    finally:
        der.MAX_INTEGER_BYTES = saved


def _signed_report(v: Vehicle, serial: str, now: datetime, enc: str, **kw: Any) -> SignedManifest:
    installed = kw.pop("installed", FACTORY)
    if "counter" not in kw:
        kw["nonce"] = os.urandom(16)
    body = EcuVersionReport(serial, installed, now, **kw)
    s = SignedManifest(body, encoding=enc)
    s.sign(v.keys[serial])
    return s


def hostile_manifest(v: Vehicle, now: datetime, enc: str, case: str) -> bytes:
    """A manifest signed by the vehicle's real keys whose Secondary report (or the
    Primary's own unreachable entry) carries the hostile value ``case``."""
    primary, secondary = v.primary, next(s for s in v.keys if s != v.primary)
    fields: dict[str, Any] = {
        "counter-2**63": {"counter": 2**63},
        "length-2**63": {"installed": InstalledImage("fw.bin", 2**63, {"sha256": "ab" * 32})},
        "attack-nul": {"attack": "rollback: \x00"},
    }.get(case, {})
    unreachable = []
    with old_der_integers():
        reports = [_signed_report(v, primary, now, enc)]
        if case == "reason-nul":  # UTF8String in both DERs: where DER text can hold NUL
            unreachable = [UnreachableEcu(secondary, "timeout\x00")]
        else:
            reports.append(_signed_report(v, secondary, now, enc, **fields))
        vvm = SignedManifest(
            VehicleVersionManifest(v.vin, primary, reports, None, unreachable=unreachable),
            encoding=enc,
        )
        vvm.sign(v.keys[primary])
        return vvm.to_bytes(enc)


def _post(env: dict, vin: str, body: bytes, enc: str) -> httpx.Response:
    return httpx.post(
        f"{env['url']}/vehicles/{vin}/manifest",
        content=body,
        headers={"Content-Type": codec_for(enc).media_type},
        timeout=60,
    )


def _register(env: dict, vin: str) -> Vehicle:
    v = make_vehicle(vin)
    assert env["c"].post("/api/vehicles", json=v.api_body()).status_code == 201
    return v


CASES = ["counter-2**63", "length-2**63", "attack-nul", "reason-nul"]


@pytest.mark.parametrize("enc", ENCODINGS)
@pytest.mark.parametrize("case", CASES)
def test_signed_out_of_range_report_is_4xx_and_the_vehicle_goes_on(env, enc: str, case: str):
    if case == "attack-nul" and enc != JSON:
        pytest.skip("the DER indicator is a VisibleString: NUL cannot be signed (reason-nul)")
    now = env["clock"]()
    v, other = _register(env, "VINBAD1"), _register(env, "VINGOOD1")
    writer = env["director"].manifests.writer
    retried = writer.retried_batches
    answers: list[httpx.Response] = []

    def others() -> None:  # another vehicle uploads while the hostile manifests arrive
        for _ in range(6):
            answers.append(_post(env, other.vin, manifest(other, now, encoding=enc), enc))

    t = threading.Thread(target=others)
    t.start()
    bad = [_post(env, v.vin, hostile_manifest(v, now, enc, case), enc) for _ in range(4)]
    t.join()
    for r in bad:
        assert r.status_code == 400, r.text
        # MalformedInput (code 10), or its LimitExceeded (12) for a DER INTEGER too long
        assert r.json()["code"] in (10, 12), r.json()
    why = r.json()["detail"]
    assert ("64-bit" if "2**63" in case else "U+0000") in why
    if enc == JSON:  # the JSON decoder names the field
        assert case.split("-")[0] in why, why
    assert [a.status_code for a in answers] == [200] * 6
    # the vehicle's next genuine manifest is processed: it was never silenced
    ok = _post(env, v.vin, manifest(v, now, encoding=enc), enc)
    assert ok.status_code == 200, ok.text
    assert writer.retried_batches == retried  # nobody took the savepoint path


def test_a_value_the_inventory_cannot_store_fails_its_manifest_alone(env, monkeypatch, caplog):
    """A value that got past the core (simulated: the rows of one vehicle's manifest get
    a length of 2**63) is refused in the check phase: 422 with the reason, logged; the
    other vehicles' manifests of the same moments are stored; no batch retried."""
    from director import manifests as intake

    now = env["clock"]()
    v, other = _register(env, "VINSTORE1"), _register(env, "VINSTORE2")
    real = intake._report_rows

    def rows(vehicle: Any, reports: Any, t: int) -> Any:
        nonces, ecu_rows = real(vehicle, reports, t)
        if vehicle.id == vid:
            ecu_rows[0]["length"] = 2**63
        return nonces, ecu_rows

    vid = _vehicle_id(env, v.vin)
    monkeypatch.setattr(intake, "_report_rows", rows)
    retried = env["director"].manifests.writer.retried_batches
    with caplog.at_level(logging.WARNING, logger="uptane.service"):
        r = _post(env, v.vin, manifest(v, now), JSON)
        good = _post(env, other.vin, manifest(other, now), JSON)
    assert r.status_code == 422, r.text
    assert "64-bit" in r.json()["detail"] and "length" in r.json()["detail"]
    assert good.status_code == 200
    assert any("VINSTORE1" in m and "length" in m for m in caplog.messages)
    assert env["director"].manifests.writer.retried_batches == retried
    assert env["c"].get(f"/api/vehicles/{v.vin}").json()["last_manifest_at"] is None


def test_a_database_error_in_a_write_is_that_manifests_422(env, monkeypatch, caplog):
    """Past the inventory's own check too (simulated by switching it off): the database
    refuses the value in the write. That manifest gets 422 with the database's reason
    (logged); the batch is run again with savepoints and the others are stored."""
    from director import manifests as intake

    now = env["clock"]()
    v, other = _register(env, "VINDB1"), _register(env, "VINDB2")
    real = intake._report_rows
    vid = _vehicle_id(env, v.vin)

    def rows(vehicle: Any, reports: Any, t: int) -> Any:
        nonces, ecu_rows = real(vehicle, reports, t)
        if vehicle.id == vid:
            ecu_rows[0]["length"] = 2**63
            ecu_rows[0]["attack"] = "bad\x00"
        return nonces, ecu_rows

    monkeypatch.setattr(intake, "_report_rows", rows)
    monkeypatch.setattr(intake, "check_storable", lambda *a, **k: None)
    with caplog.at_level(logging.WARNING, logger="uptane.service"):
        r = _post(env, v.vin, manifest(v, now), JSON)
        good = _post(env, other.vin, manifest(other, now), JSON)
    assert r.status_code == 422, r.text
    assert "the database refused a value" in r.json()["detail"]
    assert good.status_code == 200
    assert any("VINDB1" in m and "refused" in m for m in caplog.messages)


@pytest.mark.parametrize("vin", ["VIN%00", "VIN%0A", "VIN1%0A", "%C2%85", "x" * 65])
def test_vehicle_routes_with_impossible_vins_are_404_never_500(env, vin: str):
    v = _register(env, "VIN1")
    body = manifest(v, env["clock"]())
    r = httpx.post(
        f"{env['url']}/vehicles/{vin}/manifest",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 404, r.text
    r = httpx.get(f"{env['url']}/vehicles/{vin}/metadata/timestamp.json", timeout=60)
    assert r.status_code == 404


def _vehicle_id(env: dict, vin: str) -> int:
    import sqlalchemy as sa

    from director import inventory as inv

    with env["director"].engine.connect() as conn:
        return int(
            conn.execute(sa.select(inv.vehicles.c.id).where(inv.vehicles.c.vin == vin)).scalar_one()
        )
