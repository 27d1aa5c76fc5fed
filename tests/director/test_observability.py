"""Observability (issue 19): Prometheus metrics at ``/metrics`` move during a load run
(requests by route and status, manifest latency, group-commit batches, cache hits and
misses, refused manifests by attack name, campaign progress), and the service writes one
JSON log line per request with its id (and one per admin change and per refused
manifest), the same id the answer and its error body carry."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from services import Service
from tls_support import metric

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # load/ is a tool beside the packages, not installed
    sys.path.insert(0, ROOT)

from director.director import Director  # noqa: E402
from director.director_server import create_app  # noqa: E402
from load import killrun  # noqa: E402

MANIFEST = 'route="/vehicles/{vin}/manifest"'


def _drive(cars, url: str, stop: threading.Event, errors: list[str]) -> None:
    def one(car) -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    car.cycle(http, url)
                except Exception as e:
                    errors.append(f"{car.vin}: {e}")

    threads = [threading.Thread(target=one, args=(c,), daemon=True) for c in cars]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(timeout=30)


def test_metrics_move_during_a_load_run(tmp_path: Path, serve_app):
    ddir, token, fleet = killrun.setup(tmp_path, f"sqlite:///{tmp_path / 'inv.db'}", 6)
    d = Director(ddir)
    url = serve_app(create_app(director=d))
    cars = [killrun.Car(vin, keys, killrun._trust(ddir, vin, keys)) for vin, keys in fleet.items()]
    scrape = lambda: httpx.get(f"{url}/metrics", timeout=30).text  # noqa: E731
    first = scrape()
    stop, errors = threading.Event(), []
    runner = threading.Thread(target=_drive, args=(cars, url, stop, errors), daemon=True)
    runner.start()
    try:
        time.sleep(2.0)
        during = scrape()
        time.sleep(1.5)
    finally:
        stop.set()
        runner.join(timeout=60)
    assert not errors, errors[:3]
    # a manifest replayed: refused by its attack name; a campaign: its progress
    body = cars[0].acked[-1]
    assert httpx.post(f"{url}/vehicles/{cars[0].vin}/manifest", content=body).status_code == 409
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    r = admin.post("/api/v1/campaigns", json={"target": "brk/fw-2.bin", "hardware_id": "brk-v1"})
    assert r.status_code == 201, r.text
    last = scrape()

    def grows(name: str, **labels: str) -> bool:
        a, b, c = (metric(t, name, **labels) for t in (first, during, last))
        return a < b < c

    assert grows("uptane_http_requests_total", method="POST", status="200")
    assert metric(during, "uptane_http_requests_total", status="200") > 20
    assert MANIFEST in during
    assert grows("uptane_manifest_seconds_count")
    assert grows("uptane_group_commit_batch_size_count")
    assert metric(last, "uptane_metadata_cache_total", result="hit") > 0
    assert metric(last, "uptane_metadata_cache_total", result="miss") > 0
    assert metric(last, "uptane_manifests_refused_total", attack="replay") == 1
    assert metric(last, "uptane_campaigns", state="running") == 1
    assert metric(last, "uptane_campaign_members") == 6  # one brake ECU per vehicle
    admin.close()
    d.dispose()


def test_one_json_log_line_per_request_with_its_id(tmp_path: Path):
    ddir, token, fleet = killrun.setup(tmp_path, f"sqlite:///{tmp_path / 'inv.db'}", 1)
    vin = next(iter(fleet))
    log = tmp_path / "director.log"
    node = Service("director.director_cli", ddir, log, "--log-format", "json")
    try:
        c = httpx.Client(base_url=node.url, timeout=30)
        r = c.get(f"/vehicles/{vin}/metadata/timestamp.json", headers={"X-Request-ID": "obs-1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "obs-1"
        r = c.get("/vehicles/NOPE/metadata/9.root.json", headers={"X-Request-ID": "obs-2"})
        assert r.status_code == 404 and r.json()["request_id"] == "obs-2"
        auth = {"Authorization": f"Bearer {token}", "X-Request-ID": "obs-3"}
        assert c.post("/api/v1/groups", json={"name": "g"}, headers=auth).status_code == 201
        r = c.post(f"/vehicles/{vin}/manifest", content=b"{}", headers={"X-Request-ID": "obs-4"})
        assert r.status_code == 400
        r = c.get("/healthz")
        generated = r.headers["x-request-id"]
        assert len(generated) == 32
    finally:
        node.stop()
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    requests = {x["request_id"]: x for x in lines if x.get("event") == "request"}
    assert requests["obs-1"]["route"] == "/vehicles/{vin}/metadata/{name}"
    assert requests["obs-1"]["status"] == 200 and requests["obs-1"]["ms"] >= 0
    assert requests["obs-2"]["status"] == 404
    assert requests["obs-3"]["route"] == "/api/v1/groups"
    assert requests["obs-4"]["status"] == 400 and generated in requests
    change = [x for x in lines if x.get("event") == "admin-change"]
    assert change[0]["request_id"] == "obs-3" and change[0]["caller"] == "admin"
    refused = [x for x in lines if x.get("event") == "manifest-refused"]
    assert refused[0]["request_id"] == "obs-4" and refused[0]["vin"] == vin
    assert refused[0]["attack"] == "malformed-input"
    for x in lines:  # every line is structured, and none carries a token
        assert {"ts", "level", "logger", "msg"} <= set(x)
        assert token not in json.dumps(x)
    assert vin not in json.dumps(requests["obs-1"])  # the route template, not the URL


def test_the_primary_writes_json_records_when_asked(tmp_path: Path, capsys):
    from tls_support import PRIMARY_TOML

    from primary import cli as primary_cli

    ddir, _, fleet = killrun.setup(tmp_path, f"sqlite:///{tmp_path / 'inv.db'}", 1)
    vin = next(iter(fleet))
    toml = PRIMARY_TOML.format(
        vin=vin, serial=f"{vin}-pri", hw="gw-v1", director="http://x", image="http://y", tls=""
    )
    (tmp_path / "car").mkdir()
    (tmp_path / "car" / "primary.toml").write_text(toml)
    argv = ["provision", "--config", str(tmp_path / "car" / "primary.toml"),
            "--director-root", str(ddir / "root" / "1.root.json"),
            "--image-root", str(tmp_path / "image-repo" / "metadata" / "1.root.json")]  # fmt: skip
    assert primary_cli.main(["--log-format", "json", *argv]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) >= 3 and lines[0]["msg"].startswith("provisioned")
    assert all(x["logger"] == "uptane.primary" and x["event"] == "step" for x in lines)


@pytest.mark.parametrize("fmt,tty,expected", [("auto", True, "text"), ("auto", False, "json")])
def test_text_on_a_terminal_json_otherwise(fmt: str, tty: bool, expected: str):
    from storage.logs import choose

    class Stream:
        def isatty(self) -> bool:
            return tty

    assert choose(fmt, Stream()) == expected  # type: ignore[arg-type]
