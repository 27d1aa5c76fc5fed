"""``timeserver.client.fetch_responses`` against UDP peers on 127.0.0.1 that misbehave on
purpose: silent, losing the first request, sending stray datagrams first. Each peer is a
real socket in a thread; its answers are signed with the real signer (``sign_batch``)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from timeserver.client import TimeServerAddress, fetch_responses
from uptane import roughtime as rt

L = rt.PRIMARY_LIMITS
NOW = 1_790_000_000
LONG_TERM, ONLINE = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
CERT = rt.make_certificate(LONG_TERM, rt.public_bytes(ONLINE), NOW - 10, NOW + 10)
KEY = rt.TimeServerKey("peer", rt.public_bytes(LONG_TERM))

#: what a peer does with its n-th request: the datagrams it sends back (maybe none)
Behaviour = Callable[[int, bytes], list[bytes]]


def signed(nonce: bytes) -> bytes:
    return rt.sign_batch([nonce], midpoint=NOW, radius=3, certificate=CERT, online_key=ONLINE)[0]


class Peer:
    """A UDP socket on 127.0.0.1 answering by ``behaviour`` until closed."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.behaviour, self.requests = behaviour, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def address(self) -> TimeServerAddress:
        return TimeServerAddress("127.0.0.1", self.sock.getsockname()[1], KEY.public_key)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.requests += 1
            nonce = rt.parse_request(data, L).nonce
            for reply in self.behaviour(self.requests, nonce):
                self.sock.sendto(reply, peer)

    def close(self) -> None:
        """Stop after reading every datagram already queued."""
        if self.sock.fileno() < 0:
            return
        self.stop.set()
        self.thread.join(5)
        self.sock.settimeout(0)
        while True:
            try:
                self.sock.recv(65535)
            except BlockingIOError:
                break
            self.requests += 1
        self.sock.close()


@pytest.fixture
def peer() -> Iterator[Callable[[Behaviour], Peer]]:
    peers: list[Peer] = []

    def make(behaviour: Behaviour) -> Peer:
        peers.append(Peer(behaviour))
        return peers[-1]

    yield make
    for p in peers:
        p.close()


def test_a_silent_server_gives_none_after_its_retries_without_hanging(peer):
    silent = peer(lambda n, nonce: [])
    assert fetch_responses([silent.address], os.urandom(32), timeout=0.2, retries=2) == [None]
    silent.close()  # reads what reached it first
    assert silent.requests == 3  # the first request and two retries


def test_a_lost_first_answer_is_recovered_by_a_retry(peer):
    lossy = peer(lambda n, nonce: [] if n == 1 else [signed(nonce)])
    nonce = os.urandom(32)
    (response,) = fetch_responses([lossy.address], nonce, timeout=0.3, retries=2)
    assert response is not None and lossy.requests == 2
    assert rt.verify_response(response, nonce, [KEY], L).midpoint == NOW


def test_stray_and_stale_datagrams_do_not_displace_the_answer(peer):
    stale = signed(os.urandom(32))  # an answer to some other request
    noisy = peer(lambda n, nonce: [b"garbage", stale, signed(nonce)])
    nonce = os.urandom(32)
    (response,) = fetch_responses([noisy.address], nonce, timeout=2.0)
    assert response is not None
    rt.verify_response(response, nonce, [KEY], L)


def test_several_servers_are_asked_at_once_and_answers_keep_their_order(peer):
    good = peer(lambda n, nonce: [signed(nonce)])
    silent = peer(lambda n, nonce: [])
    nonce = os.urandom(32)
    got = fetch_responses([silent.address, good.address], nonce, timeout=0.3, retries=1)
    assert got[0] is None and got[1] is not None and good.requests == 1


def test_addresses_parse_host_and_port():
    assert TimeServerAddress.parse("127.0.0.1:2002") == TimeServerAddress("127.0.0.1", 2002)
    assert TimeServerAddress.parse("[::1]:2002").host == "::1"
    for bad in ("127.0.0.1", ":2002", "host:port"):
        with pytest.raises(ValueError):
            TimeServerAddress.parse(bad)
