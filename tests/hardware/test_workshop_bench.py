"""The bench session (issue 18) against the real Director and Image repository services:
ten flashes of the same bench vehicle, each a new release assigned and flashed with the
documented command's code path, each bundle confirmed by the ECU's own report; a report
kept in the outbox while the Director cannot be reached, sent later; and the link's
answer when nothing is behind the port."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cycle_support import backend_and_vehicle
from test_agent_support import Loopback

from director.director import EcuSpec
from director.image_repo import ImageRepository, default_offline_dir
from hardware import bench
from hardware.bench_session import BenchSession
from hardware.client import LinkClient, NoAnswer
from secondary.agent import SecondaryAgent
from secondary.cli import provision
from secondary.config import SecondaryConfig
from uptane.keys import Key
from uptane.limits import PRIMARY

VIN = "BENCH-0001"
ECU, HW = "brake-7-0001", "hw-brake-7"


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _release(backend, now: datetime, n: int) -> tuple[str, bytes]:
    path, data = f"brakes/fw-1.{n}.bin", bytes([n]) * (4096 + 97 * n)
    ImageRepository(backend.image_dir, now).stage_target(path, data, [HW], n)
    ImageRepository(
        backend.image_dir, now, offline_dir=default_offline_dir(backend.image_dir)
    ).sign(now)
    return path, data


def _args(session: Path, image: Path, **kw: object) -> argparse.Namespace:
    base = {"session": str(session), "image": str(image), "bundle": None, "metadata": None}
    return argparse.Namespace(**{**base, "name": None, "quiet": True, "vin": None, **kw})


def _bench_vehicle(tmp_path: Path, backend) -> tuple[BenchSession, SecondaryAgent]:
    """`uptane-secondary provision`, `uptane-flash session`, `uptane-director vehicle add`."""
    provision(
        tmp_path / "ecu",
        ecu_serial=ECU,
        hardware_id=HW,
        director_root=backend.director_root("der"),
        vehicle_id=VIN,
        slot_size=64 * 1024,
    )
    agent = SecondaryAgent.from_config(SecondaryConfig.load(tmp_path / "ecu" / "secondary.toml"))
    agent.start()
    session = BenchSession.create(tmp_path / "bench", VIN, director_url=backend.director_proxy.url)
    ecu_key = Key.from_bytes((tmp_path / "ecu" / "ecu_key.pub.json").read_bytes(), PRIMARY)
    backend.register(
        VIN,
        [
            EcuSpec("bench", "uptane-bench", session.key().key, True),
            EcuSpec(ECU, HW, ecu_key, False),
        ],
    )
    return session, agent


def test_ten_flashes_of_one_bench_vehicle_each_confirmed(tmp_path: Path, now) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries={}) as (backend, _car):
        _session, agent = _bench_vehicle(tmp_path, backend)
        for n in range(1, 11):
            path, data = _release(backend, now, n)
            (tmp_path / f"fw-{n}.bin").write_bytes(data)
            time.sleep(0.3)  # the Image repository service picks the release up
            backend.director.assign(VIN, [(ECU, path)])
            client = LinkClient(Loopback(agent.endpoint()), PRIMARY, link_key=agent.link_key)
            out = bench._flash(_args(tmp_path / "bench", tmp_path / f"fw-{n}.bin"), client)
            assert out["installed"] == path and out["director"]["uploaded"], out
            assert out["director"]["answer"]["bundle"]["state"] == "installed", out
        status = backend.director.vehicle_status(VIN)
        assert [b["state"] for b in status["bundles"]] == ["installed"] * 10
        assert agent.last_error == {}


def test_a_report_kept_while_the_director_is_away_is_sent_later(tmp_path: Path, now) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries={}) as (backend, _car):
        session, agent = _bench_vehicle(tmp_path, backend)
        path, data = _release(backend, now, 1)
        (tmp_path / "fw.bin").write_bytes(data)
        time.sleep(0.3)
        backend.director.assign(VIN, [(ECU, path)])
        # the metadata fetched while online, the flash done with the Director away
        meta = tmp_path / "meta"
        meta.mkdir()
        for name, blob in session.repository_files(session.director_base(), "der", full=False):
            (meta / name).write_bytes(blob)
        away = BenchSession.load(tmp_path / "bench")
        away.director_url = "http://127.0.0.1:9"  # nothing listens there
        away.save()
        client = LinkClient(Loopback(agent.endpoint()), PRIMARY, link_key=agent.link_key)
        out = bench._flash(
            _args(tmp_path / "bench", tmp_path / "fw.bin", metadata=str(meta)), client
        )
        assert out["installed"] == path and out["director"]["uploaded"] is False
        saved = Path(out["director"]["saved"])
        assert saved.parent == tmp_path / "bench" / "outbox" and saved.is_file()
        assert backend.director.vehicle_status(VIN)["bundles"][0]["state"] == "in_flight"
        # back online: `uptane-flash upload --session bench`
        session.save()
        assert bench.main(["upload", "--session", str(tmp_path / "bench")]) == 0
        assert not saved.exists()
        assert backend.director.vehicle_status(VIN)["bundles"][0]["state"] == "installed"


class _Silent:
    """A transport with nothing behind it (an unplugged cable)."""

    max_frame = 1024

    def negotiate(self, frame_size: int) -> None:
        pass

    def send(self, message: bytes, timeout: float | None = None) -> None:
        pass

    def recv(self, timeout: float) -> bytes | None:
        time.sleep(timeout)
        return None

    def close(self) -> None:
        pass


def test_a_silent_port_is_no_answer_within_the_probe_budget() -> None:
    client = LinkClient(_Silent(), PRIMARY)
    t0 = time.monotonic()
    with pytest.raises(NoAnswer) as e:
        client.probe(1.5)
    assert time.monotonic() - t0 < 2.5
    assert e.value.attack == "link-failure"  # a configuration problem, never drop-request
    # the client's own timeouts are back for the operations that follow
    assert (client.endpoint.timeout, client.endpoint.retries) == (2.0, 3)


def test_the_session_writes_what_the_director_takes(tmp_path: Path) -> None:
    s = BenchSession.create(tmp_path / "bench", VIN, director_url="http://127.0.0.1:8000")
    pub = json.loads((tmp_path / "bench" / "bench.pub.json").read_text())
    assert Key.from_dict(pub, PRIMARY) == s.key().key
    assert (tmp_path / "bench" / "bench.pem").stat().st_mode & 0o777 == 0o600
    again = BenchSession.load(tmp_path / "bench")
    assert (again.vin, again.hardware_id, again.director_url) == (
        VIN,
        "uptane-bench",
        "http://127.0.0.1:8000",
    )
    with pytest.raises(ValueError, match="exists"):
        BenchSession.create(tmp_path / "bench", VIN)


def test_the_bench_manifest_names_the_ecus_not_on_the_cable(tmp_path: Path) -> None:
    """§5.3.2.1: every registered ECU is represented once; the laptop names the bench
    vehicle's other ECUs unreachable, inside what it signs."""
    from datetime import timedelta

    from uptane.keys import PrivateKey
    from uptane.manifest import (
        EcuVersionReport,
        InstalledImage,
        SignedManifest,
        check_manifest_against_inventory,
        decode_vehicle_manifest,
    )

    s = BenchSession.create(tmp_path / "bench", VIN, ecus=("door-2", ECU))
    ecu_key = PrivateKey.generate()
    report = SignedManifest(
        EcuVersionReport(
            ECU,
            InstalledImage("", 0, {"sha256": "00" * 32}),
            datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1),
            nonce=b"n" * 16,
        ),
        encoding="der",
    )
    report.sign(ecu_key)
    body = s.manifest(report.to_bytes(), "der")
    vvm = decode_vehicle_manifest(body, PRIMARY, "der")
    assert [u.ecu_id for u in vvm.signed.unreachable] == ["door-2"]
    door = PrivateKey.generate().key
    _, reports = check_manifest_against_inventory(
        vvm,
        vehicle_id=VIN,
        primary_id="bench",
        ecu_keys={"bench": s.key().key, ECU: ecu_key.key, "door-2": door},
    )
    assert set(reports) == {"bench", ECU}
