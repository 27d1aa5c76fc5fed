"""End to end (issue 21): signed time and the authenticated link, with real processes.

The OEM's time server (``uptane-time-server serve``, Roughtime draft 11 on UDP), the
Director and the Image repository run as their own processes; the serial Secondary runs as
``uptane-secondary run`` on a pty wire, provisioned with the time server's key and a link
key; the Primary runs as its own process with both. The test process plays the other
peers on the same wire: a bench tool with the link key, and a stranger without it.

- the Secondary's clock moves only through verified time, and its report carries it; the
  year-9999 PUT_TIME and the garbage INSTALL of before issue 21 are harmless: the next
  genuine update installs and the Director's bundle is not failed;
- each time refusal is named and moves no clock: an unsigned far-future time, time signed
  by an unknown key (a second, rogue time server process), a replayed time response, and
  a good signature whose Merkle proof does not contain this ECU's nonce;
- forged and replayed link messages are dropped: no answer, nothing changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from e2e_support import Vehicle, bounded, images, installed, show_logs

from demo.stack import SERIAL_ECU, Stack, wait_until
from hardware import messages as m
from hardware.bench import describe_report
from hardware.client import LinkClient
from hardware.secure_link import LinkKey
from hardware.serial_link import SerialTransport
from timeserver.client import TimeServerAddress, fetch_responses
from timeserver.keys import init, read_public
from uptane import roughtime as rt
from uptane.errors import (
    BadSignature,
    LinkAuthentication,
    SessionRequired,
    TimeReplay,
    UnsignedTime,
)
from uptane.limits import PRIMARY

pytestmark = pytest.mark.slow

BRAKE = SERIAL_ECU[0]
YEAR_9999 = 253_402_300_000


@contextlib.contextmanager
def signed_stack(work: Path) -> Iterator[Vehicle]:
    """The stack of ``make demo`` with its time server: the services, the time server,
    the vehicle provisioned (time key, link keys) and the serial Secondary running."""
    with bounded(), Stack(work, can="virtual") as stack:
        try:
            stack.create_image_repo()
            stack.start_image_repo()
            stack.create_director()
            stack.start_director()
            stack.create_time_server()
            stack.start_time_server()
            keys = stack.provision_vehicle()
            stack.start_secondaries()
            yield Vehicle(stack, keys)
        except BaseException:
            show_logs(stack)
            raise


class Recording:
    """A transport that keeps a copy of every PDU it sends."""

    def __init__(self, inner: SerialTransport) -> None:
        self.inner, self.sent = inner, []

    @property
    def max_frame(self) -> int:
        return self.inner.max_frame

    def negotiate(self, frame_size: int) -> None:
        self.inner.negotiate(frame_size)

    def send(self, message: bytes, timeout: float | None = None) -> None:
        self.sent.append(bytes(message))
        self.inner.send(message, timeout)

    def recv(self, timeout: float) -> bytes | None:
        return self.inner.recv(timeout)

    def close(self) -> None:
        self.inner.close()


def wire_transport(stack: Stack) -> SerialTransport:
    assert stack.wire is not None
    return SerialTransport(stack.wire.primary_end, ack_timeout=0.05, retries=20)


def bench(stack: Stack, *, key: bool = True) -> LinkClient:
    """A peer on the Primary's end of the serial wire, with brake-1's link key or none."""
    link_key = LinkKey.load(stack.primary_config_path.parent / "keys" / f"{BRAKE}.link")
    return LinkClient(
        Recording(wire_transport(stack)),
        PRIMARY,
        timeout=1.0,
        retries=1,
        link_key=link_key if key else None,
    )


def clock_of(stack: Stack) -> dict:
    return json.loads((stack.ecu_dir(BRAKE) / "state" / "time").read_text())


def token_for(client: LinkClient, servers: list[TimeServerAddress], *, mine: bool = True):
    """A Primary's token for brake-1: its fresh nonce (or, ``mine=False``, a commitment
    that leaves it out) and each server's real response to the committed nonce."""
    ecu = client.time_nonce()
    leaves = [ecu if mine else os.urandom(32), os.urandom(32)]
    commitment = rt.commit_nonces(leaves)
    got = fetch_responses(servers, commitment.nonce, timeout=1.0, retries=3)
    assert all(r is not None for r in got), "a time server did not answer"
    return commitment.token(0, [r for r in got if r is not None]).to_bytes()


def _past(second: int) -> None:
    """Wait until the wall clock is past ``second`` (the time server reads the same one)."""
    while time.time() < second + 1.2:
        time.sleep(0.1)


def server_address(stack: Stack) -> TimeServerAddress:
    host, port = stack.time_address.rsplit(":", 1)
    return TimeServerAddress(host, int(port), read_public(stack.time_key))


def rogue_time_server(stack: Stack) -> TimeServerAddress:
    """Another time server process, with keys no ECU was provisioned with."""
    d = stack.work / "rogue-time"
    init(d / "offline", d / "online", now=int(datetime.now(UTC).timestamp()) - 60, days=2)
    child = stack.procs.start(
        "rogue-time", ["timeserver", "serve", "--online", str(d / "online"), "--port", "0"]
    )
    found: list[str] = []

    def serving() -> bool:
        hit = re.search(r"on udp ([0-9.]+):(\d+);", child.log.read_text(errors="replace"))
        if hit:
            found[:] = [hit.group(1), hit.group(2)]
        return hit is not None

    wait_until("the rogue time server", serving, child, 60)
    return TimeServerAddress(found[0], int(found[1]), read_public(d / "offline" / "longterm.pub"))


def test_signed_time_end_to_end_and_the_old_bus_messages_are_harmless(tmp_path: Path) -> None:
    with signed_stack(tmp_path) as car:
        stack = car.stack
        provisioned = clock_of(stack)
        assert provisioned["source"] == "provisioned"
        # before issue 21, one unsigned PUT_TIME of the year 9999 from any peer bricked the
        # ECU's updates, and a garbage INSTALL failed the Director's bundle
        release = images("2.0", 2, 96 * 1024, 24 * 1024)
        stack.release(list(release.values()))
        stack.assign({serial: img.path for serial, img in release.items()})
        stranger = bench(stack, key=False)
        with pytest.raises(LinkAuthentication):
            stranger.put_time(YEAR_9999)
        with pytest.raises(LinkAuthentication):
            stranger.install("garbage.bin")
        plain = stranger.transport
        plain.send(m.encode(m.Install(filename="garbage.bin"), 7))  # no envelope at all
        reply = m.decode(plain.recv(5.0) or b"", PRIMARY).message
        assert isinstance(reply, m.Error) and isinstance(reply.to_exception(), SessionRequired)
        stranger.close()
        with bench(stack) as tool:  # even with the link key, unsigned time is refused
            with pytest.raises(UnsignedTime):
                tool.put_time(YEAR_9999)
            shown = describe_report(tool.get_report(b"r" * 16))["signed"]
        assert clock_of(stack) == provisioned and "attack" not in shown

        cycle = stack.run_primary()
        assert cycle.returncode == 0, cycle.text
        assert "time: verified time" in cycle.text
        assert f"{BRAKE}: installed {release[BRAKE].path}" in cycle.text
        held = clock_of(stack)
        now = datetime.now(UTC).timestamp()
        assert held["source"] == "signed" and now - 120 < held["latest"] <= now + 5
        confirm = stack.run_primary()
        assert confirm.returncode == 0, confirm.text
        states = {
            a["ecu"]: a["state"]
            for a in stack.status()["assignments"]
            if a["target"] in {img.path for img in release.values()}
        }
        assert set(states.values()) == {"installed"}, states  # not failed by any of it
        report = stack.checked_reports(car.keys)[BRAKE]
        assert abs(report.latest_time.timestamp() - clock_of(stack)["latest"]) <= 60
        assert report.attack is None
        assert installed(stack, BRAKE).filename == release[BRAKE].path


def test_each_time_refusal_is_named_and_moves_no_clock(tmp_path: Path) -> None:
    with signed_stack(tmp_path) as car:
        stack = car.stack
        server = server_address(stack)
        rogue = rogue_time_server(stack)
        with bench(stack) as tool:
            # a signed time in the provisioned second would not move the clock (it never
            # moves back, and an equal time is not written): let that second pass first
            _past(clock_of(stack)["latest"])
            good = token_for(tool, [server])
            tool.put_time(0, good)  # the genuine path works over this wire
            before = clock_of(stack)
            assert before["source"] == "signed"
            with pytest.raises(UnsignedTime):
                tool.put_time(YEAR_9999)
            with pytest.raises(BadSignature):
                tool.put_time(0, token_for(tool, [rogue]))
            with pytest.raises(TimeReplay):
                tool.put_time(0, good)  # a response to an old nonce
            with pytest.raises(TimeReplay):
                tool.put_time(0, token_for(tool, [server], mine=False))
            assert clock_of(stack) == before
            st = tool.status()
        assert st.installed is None and stack.secondaries[BRAKE].alive


def test_forged_and_replayed_link_messages_are_dropped(tmp_path: Path) -> None:
    with signed_stack(tmp_path) as car:
        stack = car.stack
        with bench(stack) as tool:
            tool.put_time(0, token_for(tool, [server_address(stack)]))
            tool.status()
            recorded = list(tool.transport.sent)  # type: ignore[attr-defined]
        before = clock_of(stack)
        wire = wire_transport(stack)
        try:
            # the PUT_TIME PDU (a valid token inside), played back as it was
            put_time = recorded[-2]
            wire.send(put_time)
            assert wire.recv(2.0) is None
            # the same PDU with one byte of its payload changed: a forgery
            forged = bytearray(put_time)
            forged[40] ^= 0x01
            wire.send(bytes(forged))
            assert wire.recv(2.0) is None
            # the whole conversation again, HELLO first: its session is in use, so even
            # the HELLO is stale
            for pdu in recorded:
                wire.send(pdu)
                assert wire.recv(1.0) is None
        finally:
            wire.close()
        assert clock_of(stack) == before
        # the Secondary still serves its genuine peers
        with bench(stack) as tool:
            assert tool.status().installed is None
        with pytest.raises(LinkAuthentication):
            LinkClient(wire_transport(stack), PRIMARY, timeout=0.5, retries=0).status()
