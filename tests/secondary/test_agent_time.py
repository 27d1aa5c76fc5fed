"""Signed time at a Secondary (issue 21): only a verified time token bound to this ECU's
nonce moves its clock; every refusal is named and leaves the clock as it was; the
Director targets that approved an image must still be unexpired at INSTALL; and without a
link key, what an unauthenticated peer provokes is reported as such."""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_agent_support import (
    NOW,
    Director,
    Loopback,
    client_for,
    image_bytes,
    later,
    open_agent,
    provision_ecu,
    snapshot,
)

from hardware.client import LinkClient
from secondary.config import SecondaryConfig
from secondary.state import TIME
from uptane import roughtime as rt
from uptane.errors import (
    BadLength,
    BadSignature,
    ExpiredMetadata,
    ExpiredTimeDelegation,
    LinkAuthentication,
    TimeJumpRefused,
    TimeReplay,
    UnsignedTime,
)
from uptane.limits import PRIMARY
from uptane.manifest import decode_report
from uptane.metadata import DER

YEAR_9999 = 253_402_300_000


class TimeServer:
    """An OEM time server in memory: a long-term key, an online key it delegated for a
    window around ``NOW``, and the draft-11 responses it signs (uptane.roughtime)."""

    def __init__(self, days: int = 800) -> None:
        self.long_term = Ed25519PrivateKey.generate()
        self.online = Ed25519PrivateKey.generate()
        start = int(NOW.timestamp()) - rt.DAY
        public = rt.public_bytes(self.online)
        self.cert = rt.make_certificate(self.long_term, public, start, start + days * rt.DAY)

    @property
    def public_b64(self) -> bytes:
        return base64.b64encode(rt.public_bytes(self.long_term))

    def respond(self, nonce: bytes, at: datetime, others: int = 2) -> bytes:
        nonces = [os.urandom(32) for _ in range(others)] + [nonce]
        return rt.sign_batch(
            nonces,
            midpoint=int(at.timestamp()),
            radius=3,
            certificate=self.cert,
            online_key=self.online,
        )[-1]


def token(client: LinkClient, servers: list[TimeServer], at: datetime) -> bytes:
    """What a Primary forwards: this ECU's fresh nonce and one of the Primary's committed
    into the request nonce, and each server's response to it."""
    commitment = rt.commit_nonces([client.time_nonce(), os.urandom(32)])
    packets = [s.respond(commitment.nonce, at) for s in servers]
    return commitment.token(0, packets).to_bytes()


def signed_ecu(tmp_path: Path, *servers: TimeServer, link_key: bool = True):
    director = Director()
    keys = {f"time-{i + 1}": s.public_b64 for i, s in enumerate(servers)}
    cfg = provision_ecu(tmp_path, director, time_keys=keys, link_key=link_key)
    agent = open_agent(cfg)
    return director, cfg, agent, client_for(agent)


def stored_time(cfg: SecondaryConfig) -> dict:
    return json.loads((cfg.state_dir / TIME).read_text())


def test_provisioned_time_keys_are_in_the_configuration(tmp_path: Path) -> None:
    server = TimeServer()
    _, cfg, agent, _ = signed_ecu(tmp_path, server)
    assert [k.name for k in cfg.load_time_keys()] == ["time-1"]
    assert cfg.load_time_keys()[0].public_key == rt.public_bytes(server.long_term)
    assert agent.time.signed and agent.link_key is not None
    assert stored_time(cfg) == {"latest": int(NOW.timestamp()), "source": "provisioned"}


def test_verified_time_moves_the_clock_and_the_report_carries_it(tmp_path: Path) -> None:
    server = TimeServer()
    _, cfg, agent, client = signed_ecu(tmp_path, server)
    client.put_time(0, token(client, [server], later(3)))
    assert agent.latest_time == later(3)
    assert stored_time(cfg) == {"latest": int(later(3).timestamp()), "source": "signed"}
    body = decode_report(client.get_report(b"n" * 16), PRIMARY, DER).signed
    assert body.latest_time == later(3) and body.attack is None


@pytest.mark.parametrize("offered", [YEAR_9999, int(later(1).timestamp()), 0, b"9999-12-31"])
def test_unsigned_time_never_persists(tmp_path: Path, offered) -> None:
    server = TimeServer()
    director, cfg, agent, client = signed_ecu(tmp_path, server)
    before = stored_time(cfg)
    with pytest.raises(UnsignedTime):
        client.put_time(offered)
    assert stored_time(cfg) == before and agent.latest_time == NOW
    assert agent.last_error == {}  # a policy refusal, not an attack indicator
    # the next genuine update installs: the year 9999 bricked nothing
    image = image_bytes("after-9999", 8_000)
    director.assign(image, "fw/a.bin", release_counter=1)
    client.put_time(0, token(client, [server], later(1)))
    client.put_metadata("targets", DER, director.targets)
    client.put_image("fw/a.bin", image, len(image))
    assert client.install("fw/a.bin").installed == "fw/a.bin"


def test_time_signed_by_an_unknown_key_is_refused(tmp_path: Path) -> None:
    _, cfg, agent, client = signed_ecu(tmp_path, TimeServer())
    before = stored_time(cfg)
    with pytest.raises(BadSignature):
        client.put_time(0, token(client, [TimeServer()], later(2)))
    assert stored_time(cfg) == before and agent.latest_time == NOW
    assert agent.last_error["attack"] == "bad-signature"


def test_a_replayed_time_response_is_refused(tmp_path: Path) -> None:
    server = TimeServer()
    _, cfg, agent, client = signed_ecu(tmp_path, server)
    old = token(client, [server], later(1))
    client.put_time(0, old)
    before = stored_time(cfg)
    with pytest.raises(TimeReplay):  # its nonce was used: no nonce is outstanding
        client.put_time(0, old)
    client.time_nonce()  # a fresh nonce does not revive the old token either
    with pytest.raises(TimeReplay):
        client.put_time(0, old)
    assert stored_time(cfg) == before and agent.latest_time == later(1)


def test_a_good_signature_whose_merkle_proof_lacks_this_ecus_nonce_is_refused(
    tmp_path: Path,
) -> None:
    server = TimeServer()
    _, cfg, agent, client = signed_ecu(tmp_path, server)
    before = stored_time(cfg)
    # 1. the Primary's commitment leaves this ECU's nonce out (a token of another ECU)
    other = rt.commit_nonces([os.urandom(32), os.urandom(32)])
    client.time_nonce()
    theirs = other.token(0, [server.respond(other.nonce, later(1))]).to_bytes()
    with pytest.raises(TimeReplay):
        client.put_time(0, theirs)
    # 2. the server's signature is good, its NONC is ours, but its PATH leads elsewhere
    commitment = rt.commit_nonces([client.time_nonce(), os.urandom(32)])
    signed = server.respond(os.urandom(32), later(1))
    msg = rt.decode_message(rt.decode_packet(signed, rt.PRIMARY_LIMITS), rt.PRIMARY_LIMITS)
    msg[rt.NONC] = commitment.nonce
    forged = rt.encode_packet(rt.encode_message(msg))
    rt.parse_response(forged, rt.PRIMARY_LIMITS)  # well-formed
    with pytest.raises(TimeReplay, match="Merkle proof"):
        client.put_time(0, commitment.token(0, [forged]).to_bytes())
    assert stored_time(cfg) == before and agent.latest_time == NOW


def test_far_ahead_signed_time_needs_a_threshold_of_servers(tmp_path: Path) -> None:
    one, two = TimeServer(), TimeServer()
    _, cfg, agent, client = signed_ecu(tmp_path, one, two)
    before = stored_time(cfg)
    with pytest.raises(TimeJumpRefused):  # past the one-server bound of 366 days
        client.put_time(0, token(client, [one], later(400)))
    assert stored_time(cfg) == before and agent.last_error == {}
    # two months is inside it: a vehicle back from two months offline just recovers
    client.put_time(0, token(client, [one], later(61)))
    assert agent.latest_time == later(61)
    # two servers agreeing may move it further
    client.put_time(0, token(client, [one, two], later(61 + 400)))
    assert agent.latest_time == later(461)


def test_an_approval_that_expired_during_the_transfer_is_refused_at_install(
    tmp_path: Path,
) -> None:
    server = TimeServer()
    director, _, agent, client = signed_ecu(tmp_path, server)
    old = image_bytes("v1", 6_000)
    director.assign(old, "fw/v1.bin", release_counter=1)
    client.put_time(0, token(client, [server], later(1)))
    client.put_metadata("targets", DER, director.targets)
    client.put_image("fw/v1.bin", old, len(old))
    client.install("fw/v1.bin")
    image = image_bytes("v2", 20_000)
    director.assign(image, "fw/v2.bin", release_counter=2, now=later(2))  # expires day 92
    client.put_metadata("targets", DER, director.targets)
    client.put_image("fw/v2.bin", image, len(image))
    # the transfer took long: the latest verified time is past the targets' expiry now
    client.put_time(0, token(client, [server], later(93)))
    before = snapshot(agent)
    with pytest.raises(ExpiredMetadata, match="at INSTALL"):
        client.install("fw/v2.bin")
    assert snapshot(agent) == before  # it keeps running v1, its trusted targets stay
    assert client.status().state == "ready"  # the image received is kept
    # fresh metadata naming the same image: installed without sending it again
    director.assign(image, "fw/v2.bin", release_counter=2, now=later(93))
    client.put_metadata("targets", DER, director.targets)
    assert client.status().image_offset == len(image)
    assert client.install("fw/v2.bin").installed == "fw/v2.bin"


def test_without_time_keys_the_unsigned_time_still_moves_forward(tmp_path: Path) -> None:
    cfg = provision_ecu(tmp_path, Director())
    agent = open_agent(cfg)
    client = client_for(agent)
    assert not agent.time.signed
    client.put_time(int(later(2).timestamp()))
    assert agent.latest_time == later(2)
    assert stored_time(cfg)["source"] == "unsigned"


def test_without_a_link_key_refusals_are_reported_as_unauthenticated_peer_events(
    tmp_path: Path,
) -> None:
    server = TimeServer()
    _, cfg, agent, client = signed_ecu(tmp_path, server, link_key=False)
    assert cfg.link_key_file is None and agent.link_key is None
    with pytest.raises(BadLength):  # a garbage INSTALL from anyone on the bus
        client.install("nothing.bin")
    indicator = agent.last_error["indicator"]
    assert indicator.startswith("unauthenticated-peer: arbitrary-software: ")
    body = decode_report(client.get_report(b"r" * 16), PRIMARY, DER).signed
    assert body.attack == indicator and body.attack_name == "unauthenticated-peer"
    # signed time still works (the ECU checks the token, whoever brought it)
    client.put_time(0, token(client, [server], later(1)))
    assert agent.latest_time == later(1)


def test_with_the_link_key_a_stranger_changes_nothing(tmp_path: Path) -> None:
    _, cfg, agent, _ = signed_ecu(tmp_path, TimeServer())
    before = snapshot(agent), stored_time(cfg)
    stranger = LinkClient(Loopback(agent.endpoint()), PRIMARY, timeout=0.05, retries=0)
    with pytest.raises(LinkAuthentication):
        stranger.hello()
    with pytest.raises(LinkAuthentication):
        stranger.install("nothing.bin")
    assert (snapshot(agent), stored_time(cfg)) == before and agent.last_error == {}


def test_time_keys_and_policy_in_the_toml(tmp_path: Path) -> None:
    server = TimeServer()
    _, cfg, _, _ = signed_ecu(tmp_path, server)
    text = cfg.path.read_text()
    assert "[time]" in text and "time-keys/time-1.pub" in text
    again = SecondaryConfig.load(cfg.path)
    assert again.time_policy == rt.TimePolicy()
    assert again.link_key_file == cfg.link_key_file
    assert (cfg.path.parent / "time-keys" / "time-1.pub").read_bytes().strip() == (
        server.public_b64
    )


def test_the_time_nonce_is_fresh_each_time(tmp_path: Path) -> None:
    _, _, _, client = signed_ecu(tmp_path, TimeServer())
    nonces = {client.time_nonce() for _ in range(6)}
    assert len(nonces) == 6 and all(len(n) == rt.NONCE_BYTES for n in nonces)


def test_a_token_for_an_older_outstanding_nonce_still_verifies(tmp_path: Path) -> None:
    server = TimeServer()
    _, _, agent, client = signed_ecu(tmp_path, server)
    first = client.time_nonce()
    client.time_nonce()  # a second Primary round started (a retry, a bench tool beside it)
    commitment = rt.commit_nonces([first, os.urandom(32)])
    tok = commitment.token(0, [server.respond(commitment.nonce, later(5))]).to_bytes()
    client.put_time(0, tok)
    assert agent.latest_time == later(5)


def test_a_reboot_forgets_the_outstanding_nonces(tmp_path: Path) -> None:
    server = TimeServer()
    _, cfg, _, client = signed_ecu(tmp_path, server)
    commitment = rt.commit_nonces([client.time_nonce(), os.urandom(32)])
    tok = commitment.token(0, [server.respond(commitment.nonce, later(5))]).to_bytes()
    rebooted = open_agent(SecondaryConfig.load(cfg.path))
    with pytest.raises(TimeReplay):
        client_for(rebooted).put_time(0, tok)
    assert rebooted.latest_time == NOW


def test_time_outside_the_delegation_window_is_refused(tmp_path: Path) -> None:
    server = TimeServer(days=10)
    _, cfg, _, client = signed_ecu(tmp_path, server)
    before = stored_time(cfg)
    with pytest.raises(ExpiredTimeDelegation):
        client.put_time(0, token(client, [server], NOW + timedelta(days=20)))
    assert stored_time(cfg) == before
