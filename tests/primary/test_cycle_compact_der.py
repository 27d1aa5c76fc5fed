"""The DER flavour negotiated on the link (issue 13): a Secondary that reads ``compact-der``
says so in WELCOME; the Primary, configured to send it "der", forwards ``compact-der``
(both ends have it), decodes its compact-der report, and carries it in a compact-der
manifest the real Director accepts.

The Director publishes compact-der itself (its root ``1.root.cder`` from ``init``, each
vehicle's targets, snapshot and timestamp as ``N.targets.cder`` and so on): the Primary
fetches the Director's own files, nothing is re-encoded on the way.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cycle_support import PRIMARY_ID, VIN, Backend, Vehicle

from hardware.protocol import EcuInfo
from primary.config import load_config
from uptane.codec import COMPACT_DER, codec_for
from uptane.limits import Limits
from uptane.manifest import decode_vehicle_manifest
from uptane.metadata import decode

BRAKES = "brakes/fw-2.bin"
ONE = {"brk-1": "brk-v1"}
LIMITS = Limits.primary()
SUFFIX = codec_for(COMPACT_DER).suffix


def test_a_compact_der_secondary_gets_compact_der_over_a_der_configuration(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    backend = Backend(tmp_path / "oem", now)
    car = None
    try:
        # brk-1 reads (and reports in) compact-der: provisioned with the compact-der root
        car = Vehicle(
            tmp_path / "car", backend, now, secondaries=ONE, encodings={"brk-1": COMPACT_DER}
        )
        # the Primary is configured to send it "der": the link says which DER
        text = car.config_path.read_text().replace(f'"{COMPACT_DER}"', '"der"')
        car.config_path.write_text(text)
        car.config = load_config(car.config_path)
        assert car.config.secondary("brk-1").encoding == "der"
        info = car.ecus["brk-1"].agent.hello_info()
        assert info == EcuInfo(
            info.ecu_serial, info.hardware_id, "partial", info.slot_size, (COMPACT_DER,)
        )

        backend.assign(VIN, [("brk-1", BRAKES)])
        result = car.cycle()
        assert result.error is None, "\n".join(car.lines)
        assert result.installed == {"brk-1": BRAKES}
        assert car.installed("brk-1") == BRAKES
        # the Director's own compact-der targets, fetched from the Director as it serves them
        asked = [p for m, p, _ in backend.director_proxy.requests if p.endswith(f"targets{SUFFIX}")]
        assert asked
        served = backend.director.metadata_file(VIN, asked[-1].rsplit("/", 1)[-1])
        assert served is not None
        decode(served, LIMITS, encoding=COMPACT_DER, role_type="targets")  # compact-der
        # forwarded once, kept in the forward store under the codec's suffix
        forward = car.config.storage_dir / "forward"
        assert [p.name for p in forward.iterdir()] and all(
            p.name.endswith(codec_for(COMPACT_DER).suffix) for p in forward.iterdir()
        )
        # its report was read as compact-der and carried in a compact-der manifest, which
        # the real Director accepted
        _path, status, body, _answer = backend.director_proxy.posts[-1]
        assert status == 200
        vvm = decode_vehicle_manifest(body, LIMITS, COMPACT_DER).signed
        assert {r.signed.ecu_id for r in vvm.reports} == {"brk-1", PRIMARY_ID}
        again = car.cycle()
        assert again.error is None and again.installed == {}
        status = backend.director.vehicle_status(VIN)
        brk = next(e for e in status["ecus"] if e["serial"] == "brk-1")
        assert brk["installed"]["path"] == BRAKES
    finally:
        if car is not None:
            car.close()
        backend.stop()
