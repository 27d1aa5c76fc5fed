"""A compromised or unlucky Secondary, seen from the Primary's cycle (issue 15).

- One compromised Secondary must not silence its vehicle. It signs, with its real key, a
  report the core's policy refuses (installed length 2**63). Before issue 15 that report
  reached the Director and every manifest of the vehicle answered 500. Now the Primary's
  own decoder refuses it, and the Primary must still represent that ECU in its manifest
  (as unreachable, with the reason, and the attack in its indicator), so that the
  Director accepts the manifest, records the attack and processes the other ECUs.
- A refused manifest upload is the cycle's error (its exit status and status file).
- The reply to INSTALL lost after the Secondary's durable switch: the next cycle learns
  from the ECU's report that it runs the image, and does not send it again.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from cycle_support import VIN, backend_and_vehicle

import secondary.report as secondary_report
from uptane.encoding import der
from uptane.errors import FetchError, LinkTimeout
from uptane.manifest import EcuVersionReport, InstalledImage, SignedManifest

BRAKES = "brakes/fw-3.bin"
TWO = {"brk-1": "brk-v1", "tcu-1": "tcu-v5"}


@contextlib.contextmanager
def _old_der_integers() -> Any:
    saved = der.MAX_INTEGER_BYTES
    der.MAX_INTEGER_BYTES = 9
    try:
        yield
    finally:
        der.MAX_INTEGER_BYTES = saved


def _hostile_reports(monkeypatch: pytest.MonkeyPatch, serial: str) -> None:
    """``serial``'s agent signs, with its own key, reports claiming 2**63 bytes installed
    (written with the DER profile as it was before the policy, which held such integers)."""
    real = secondary_report.version_report

    def version_report(ecu: Any, key: Any, st: Any, **kw: Any) -> bytes:
        if ecu.ecu_serial != serial:
            return real(ecu, key, st, **kw)
        body = EcuVersionReport(
            ecu.ecu_serial,
            InstalledImage("fw.bin", 2**63, {"sha256": "ab" * 32}),
            kw["latest_time"],
            nonce=bytes(kw["nonce"]),
        )
        signed = SignedManifest(body, encoding=ecu.encoding)
        with _old_der_integers():
            signed.sign(key)
            return signed.to_bytes()

    monkeypatch.setattr(secondary_report, "version_report", version_report)


def test_one_compromised_secondary_cannot_silence_its_vehicle(tmp_path, monkeypatch) -> None:
    """Its refused report is an attack at the Primary; the manifest names the ECU
    unreachable with the reason; the Director accepts it, records the attack, and the
    other Secondary is updated."""
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now, secondaries=TWO) as (backend, car):
        _hostile_reports(monkeypatch, "tcu-1")
        backend.assign(VIN, [("brk-1", BRAKES)])
        result = car.cycle()
        # the other ECUs are processed: the manifest is accepted, the brakes updated
        assert result.manifest_sent, result.manifest_error
        assert result.installed == {"brk-1": BRAKES}
        attacks = backend.director.list_attacks(vin=VIN)
        # MalformedInput, or its LimitExceeded for a DER INTEGER past 64 bits
        named = ("malformed-input", "resource-exhaustion")
        assert any("report of tcu-1" in a["attack"] for a in attacks), attacks
        assert any(n in a["attack"] for a in attacks for n in named), attacks
        status = backend.director.vehicle_status(VIN)
        tcu = next(e for e in status["ecus"] if e["serial"] == "tcu-1")
        assert "report refused" in (tcu["unreachable"] or {}).get("reason", ""), tcu


def test_a_refused_manifest_upload_is_the_cycles_error(tmp_path) -> None:
    """The Director refuses the manifest (here: sent for a vehicle it does not know): the
    cycle ends with that error (exit status 1 with --once) and the status file says so."""
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now, secondaries=TWO) as (backend, car):
        backend.director_proxy.rules.rewrite[f"{VIN}/manifest"] = "VIN-UNKNOWN/manifest"
        result = car.cycle()
        assert not result.manifest_sent
        assert isinstance(result.error, FetchError), result.error
        assert "404" in str(result.error), result.error
        assert car.primary().state.load_cycle().last_error


def test_a_reply_lost_after_the_durable_switch_is_recognised_next_cycle(
    tmp_path, monkeypatch
) -> None:
    from primary.secondaries import SecondaryPort

    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        real = SecondaryPort.install
        sent: list[str] = []

        def install(self: SecondaryPort, filename: str) -> Any:
            sent.append(filename)
            real(self, filename)  # the Secondary switched, durably
            raise LinkTimeout("the reply to INSTALL was lost")

        monkeypatch.setattr(SecondaryPort, "install", install)
        car.cycle()
        assert car.installed("brk-1") == BRAKES  # the switch happened
        monkeypatch.setattr(SecondaryPort, "install", real)
        images: list[str] = []
        real_send = SecondaryPort.send_image
        monkeypatch.setattr(
            SecondaryPort,
            "send_image",
            lambda self, image, filename, length, **kw: (
                images.append(filename) or real_send(self, image, filename, length, **kw)
            ),
        )
        again = car.cycle()
        # the ECU's report says it runs the image: not installed a second time
        assert images == [] and sent == [BRAKES], (images, sent)
        assert again.error is None or "install" not in str(again.error).lower()
        assert car.installed("brk-1") == BRAKES
