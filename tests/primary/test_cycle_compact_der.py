"""The DER flavour negotiated on the link (issue 13): a Secondary that reads ``compact-der``
says so in WELCOME; the Primary, configured to send it "der", forwards ``compact-der``
(both ends have it), decodes its compact-der report, and carries it in a compact-der
manifest the real Director accepts.

The services do not publish compact-der files yet (the Director's per-vehicle tables hold
JSON and DER; see docs/link-protocol.md, "Codecs"): the proxy in front of the Director
serves them here, each encoded from the JSON file the Director serves and signed with the
Director's own keys (the root with its offline root keys, the targets with its online
targets key), exactly as a publishing Director would.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cycle_support import PRIMARY_ID, VIN, Backend, Vehicle

from director.config import default_offline_dir
from director.keyrotation import offline_source
from hardware.protocol import EcuInfo
from primary.config import load_config
from uptane.codec import COMPACT_DER, JSON, codec_for
from uptane.limits import Limits
from uptane.manifest import decode_vehicle_manifest
from uptane.metadata import Metadata, decode

BRAKES = "brakes/fw-2.bin"
ONE = {"brk-1": "brk-v1"}
LIMITS = Limits.primary()


def compact(data: bytes, role: str, signers: list) -> bytes:
    """``data`` (a JSON metadata file) in compact-der, signed by ``signers``."""
    md = Metadata(decode(data, LIMITS, encoding=JSON, role_type=role).signed, encoding=COMPACT_DER)
    for s in signers:
        md.sign(s)
    return md.to_bytes()


def publish_compact_root(backend: Backend) -> None:
    """What ``Backend.director_root("compact-der")`` reads: the Director's root v1 in
    compact-der, signed with its offline root keys."""
    keys = offline_source(default_offline_dir(backend.director_dir)).signers("root")
    data = backend.director_root(JSON)
    path = backend.director_dir / "root" / f"1.root.{COMPACT_DER}"
    path.write_bytes(compact(data, "root", keys))


def serve_compact_targets(backend: Backend) -> list[str]:
    """Serve the vehicle's Director targets in compact-der; returns the paths asked."""
    asked: list[str] = []

    def targets(path: str) -> bytes | None:
        asked.append(path)
        name = path.rsplit("/", 1)[-1].replace(f".{COMPACT_DER}", ".json")
        data = backend.director.metadata_file(VIN, name)
        if data is None:
            return None
        signers = backend.director.publisher.signers()["targets"]
        return compact(data, "targets", signers)

    backend.director_proxy.rules.serve[f"targets.{COMPACT_DER}"] = targets
    return asked


def test_a_compact_der_secondary_gets_compact_der_over_a_der_configuration(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    backend = Backend(tmp_path / "oem", now)
    car = None
    try:
        publish_compact_root(backend)
        asked = serve_compact_targets(backend)
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
        assert asked and all(p.endswith(f"targets.{COMPACT_DER}") for p in asked)
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
