"""Signed time through the Primary's cycle (issue 21), against the real Director and Image
repository services and a real draft-11 time server on UDP (``timeserver.server``, in a
thread here so that its clock can be moved: faketime is not needed, the time server's
clock and the Primary's TimeSource are given the same shift as the backend's).

- every ECU's clock is set from verified time before its report, and the report carries
  it (the Director's report-time check accepts it);
- a vehicle offline for two months (every metadata file it holds expired) comes back and
  updates in its next cycle, without a restart or a manual step;
- metadata that expired while a long transfer ran is refused at INSTALL, and nothing is
  installed;
- a silent time server leaves the clocks as they were, and the cycle goes on.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cycle_support import PRIMARY_ID, VIN, backend_and_vehicle

from primary.agent import Primary
from primary.cli import main as cli_main
from timeserver.keys import init, load_online
from timeserver.server import TimeServer
from uptane.errors import ExpiredMetadata

BRAKES = "brakes/fw-2.bin"
GATEWAY = "gw/gw-2.bin"
ONE = {"brk-1": "brk-v1"}


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Clock:
    """A settable clock in POSIX seconds, for the time server."""

    def __init__(self, when: datetime) -> None:
        self.when = when.timestamp()
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.when

    def advance(self, delta: timedelta) -> None:
        with self.lock:
            self.when += delta.total_seconds()


@contextlib.contextmanager
def time_server(tmp: Path, now: datetime) -> Iterator[tuple[str, Path, Clock]]:
    """``uptane-time-server init`` (a 120-day delegation from a day before ``now``) and the
    server on 127.0.0.1 with its own settable clock; yields HOST:PORT, longterm.pub and
    the clock."""
    offline, online = tmp / "time-offline", tmp / "time-online"
    init(offline, online, now=int(now.timestamp()) - 86_400, days=120)
    clock = Clock(now)
    server = TimeServer(load_online(online), "127.0.0.1", 0, clock=clock)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), daemon=True)
    thread.start()
    host, port = server.address
    try:
        yield f"{host}:{port}", offline / "longterm.pub", clock
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def stored_time(car, serial: str) -> dict:
    return json.loads((car.ecus[serial].directory / "state" / "time").read_text())


def test_each_ecu_gets_verified_time_before_its_report(tmp_path, now, capsys) -> None:
    with (
        time_server(tmp_path, now) as (address, pub, clock),
        backend_and_vehicle(tmp_path, now, secondaries=ONE, time_server=(address, pub)) as (
            backend,
            car,
        ),
    ):
        clock.advance(timedelta(hours=2))
        car.time.advance(timedelta(hours=2))
        backend.advance(timedelta(hours=2))
        backend.assign(VIN, [("brk-1", BRAKES)])
        result = car.cycle()
        assert result.error is None and result.manifest_sent, "\n".join(car.lines)
        assert result.installed == {"brk-1": BRAKES}
        later = int((now + timedelta(hours=2)).timestamp())
        held = stored_time(car, "brk-1")
        assert held["source"] == "signed" and abs(held["latest"] - later) <= 3
        assert any("time: verified time" in line for line in car.lines)
        # the report that went to the Director carried the verified time
        agent = car.ecus["brk-1"].agent
        assert abs(agent.latest_time.timestamp() - later) <= 3
        # `status` shows the Primary's latest verified time and where it came from
        assert cli_main(["status", "--config", str(car.config_path)]) == 0
        out = capsys.readouterr().out
        shown = datetime.fromtimestamp(car.primary().state.load_time() or 0, UTC)
        assert f"latest verified time: {shown:%Y-%m-%dT%H:%M:%SZ} from time server {address}" in out
        assert abs(shown.timestamp() - later) <= 3
        assert cli_main(["status", "--json", "--config", str(car.config_path)]) == 0
        st = json.loads(capsys.readouterr().out)["time"]
        assert st["signed"] and st["source"] == f"time server {address}"


def test_two_months_offline_then_an_update_without_a_restart(tmp_path, now) -> None:
    with (
        time_server(tmp_path, now) as (address, pub, clock),
        backend_and_vehicle(tmp_path, now, secondaries=ONE, time_server=(address, pub)) as (
            backend,
            car,
        ),
    ):
        first = car.cycle()
        assert first.error is None and first.manifest_sent, "\n".join(car.lines)
        agent = car.ecus["brk-1"].agent
        # parked for two months: every file the vehicle holds expired (timestamp 1 day,
        # snapshot 7, targets 30); the backend, the time server and the car's own clock
        # all moved on; the Secondary keeps running (no reboot)
        for advance in (clock.advance, car.time.advance, backend.advance):
            advance(timedelta(days=61))
        backend.assign(VIN, [("brk-1", BRAKES)])
        back = car.cycle()
        assert back.error is None, "\n".join(car.lines)
        assert back.installed == {"brk-1": BRAKES} and back.manifest_sent
        assert car.ecus["brk-1"].agent is agent  # the same running Secondary
        held = stored_time(car, "brk-1")
        target = int((now + timedelta(days=61)).timestamp())
        assert held["source"] == "signed" and abs(held["latest"] - target) <= 3
        confirm = car.cycle()
        assert confirm.error is None and confirm.manifest_sent


def test_metadata_that_expired_during_the_transfer_is_refused_at_install(tmp_path, now) -> None:
    with (
        time_server(tmp_path, now) as (address, pub, clock),
        backend_and_vehicle(tmp_path, now, secondaries=ONE, time_server=(address, pub)) as (
            backend,
            car,
        ),
    ):
        backend.assign(VIN, [("brk-1", BRAKES), (PRIMARY_ID, GATEWAY)])
        moved = []

        def progress(what: str):
            def cb(done: int, total: int) -> None:
                # halfway through the image to the ECU, 31 days pass for the time server
                # (the Director's targets live 30 days)
                if what.startswith("send") and done * 2 >= total and not moved:
                    clock.advance(timedelta(days=31))
                    moved.append(done)

            return cb

        primary = Primary(car.config, time_source=car.time, say=car.lines.append, progress=progress)
        result = primary.run_cycle()
        assert moved, "\n".join(car.lines)
        assert result.installed == {} and "brk-1" in result.failed, "\n".join(car.lines)
        assert "freeze" in result.failed["brk-1"] and "at INSTALL" in result.failed["brk-1"]
        agent = car.ecus["brk-1"].agent
        assert car.installed("brk-1") is None  # nothing installed
        assert agent.status().state == "ready"  # the received image is kept
        assert agent.last_error["code"] == ExpiredMetadata.code
        # the Primary's own update is checked the same way before it goes to its slots
        assert "freeze" in result.failed[PRIMARY_ID], result.failed


def test_a_silent_time_server_leaves_every_clock_as_it_was(tmp_path, now) -> None:
    with (
        time_server(tmp_path, now) as (_address, pub, _clock),
        backend_and_vehicle(tmp_path, now, secondaries=ONE, time_server=("127.0.0.1:9", pub)) as (
            backend,
            car,
        ),
    ):
        before = stored_time(car, "brk-1")
        backend.assign(VIN, [("brk-1", BRAKES)])
        result = car.cycle()
        text = "\n".join(car.lines)
        assert "no verified time" in text and "did not answer" in text
        assert stored_time(car, "brk-1") == before
        # the cycle went on with the system clock: the Secondary's clock is the
        # provisioned one, fresh enough here, so the update still installs
        assert result.installed == {"brk-1": BRAKES}, text
