"""Restart of the real service processes (`uptane-director serve`, `uptane-image-repo
serve`): the Director is killed (SIGKILL) in the middle of a series of manifests and
started again; everything it accepted is still there."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from oem import make_image_repo, make_vehicle, manifest, report

from director.director import Director

BIN = Path(sys.executable).parent


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Service:
    def __init__(self, *argv: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"service did not start: {out[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        s.kill()


def test_director_killed_mid_series_keeps_everything_accepted(
    tmp_path: Path, db_url: str, now, services
):
    image_dir = make_image_repo(tmp_path, now)
    ddir = tmp_path / "director"
    token = Director.init(
        ddir,
        str(image_dir / "metadata"),
        (image_dir / "metadata" / "1.root.json").read_bytes(),
        db_url=db_url,
    )
    auth = {"Authorization": f"Bearer {token}"}
    svc = Service(str(BIN / "uptane-director"), "serve", str(ddir))
    services.append(svc)
    v = make_vehicle("VIN0007")
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"
    assert (
        httpx.post(
            f"{svc.url}/api/vehicles", json=v.api_body(), headers=auth, timeout=60
        ).status_code
        == 201
    )
    r = httpx.post(
        f"{svc.url}/api/vehicles/{v.vin}/assignments",
        json={"assignments": [{"ecu": brk, "target": "brakes/fw-1.0.bin"}]},
        headers=auth,
        timeout=60,
    )
    assert r.status_code == 201
    nonces = [os.urandom(16) for _ in range(6)]

    def send(url: str, i: int) -> httpx.Response:
        from datetime import UTC, datetime

        t = datetime.now(UTC).replace(microsecond=0)
        body = manifest(v, t, reports=[report(v, tcu, t, nonce=nonces[i]), report(v, brk, t)])
        return httpx.post(
            f"{url}/vehicles/{v.vin}/manifest",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )

    for i in range(3):
        assert send(svc.url, i).status_code == 200
    before = httpx.get(f"{svc.url}/api/vehicles/{v.vin}", headers=auth, timeout=60).json()
    svc.kill()  # no shutdown: SIGKILL between two manifests of the series

    svc2 = Service(str(BIN / "uptane-director"), "serve", str(ddir))
    services.append(svc2)
    after = httpx.get(f"{svc2.url}/api/vehicles/{v.vin}", headers=auth, timeout=60).json()
    assert after["manifests_accepted"] == 3
    assert after["assignments"] == before["assignments"]
    assert after["ecus"] == before["ecus"]
    assert after["metadata"]["targets"] == before["metadata"]["targets"]
    assert send(svc2.url, 1).status_code == 409  # accepted before the kill: still a replay
    for i in range(3, 6):
        assert send(svc2.url, i).status_code == 200
    final = httpx.get(f"{svc2.url}/api/vehicles/{v.vin}", headers=auth, timeout=60).json()
    assert final["manifests_accepted"] == 6


def test_image_repo_serve_command_serves_the_repository(tmp_path: Path, now, services):
    image_dir = make_image_repo(tmp_path, now)
    svc = Service(str(BIN / "uptane-image-repo"), "serve", str(image_dir))
    services.append(svc)
    r = httpx.get(f"{svc.url}/metadata/timestamp.json")
    assert r.status_code == 200
    assert r.content == (image_dir / "metadata" / "timestamp.json").read_bytes()
    assert httpx.get(f"{svc.url}/metadata/1.root.der").status_code == 200
