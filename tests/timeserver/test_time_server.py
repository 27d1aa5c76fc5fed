"""``uptane-time-server`` as a real process on 127.0.0.1: its key files, what it prints,
time fetched with ``timeserver.client`` and verified with ``uptane.roughtime``, batching,
and each refusal with its named error (issue 21)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import struct
import time
from pathlib import Path

import pytest
from time_support import Keys, Running, cli, make_keys, serving

from timeserver.client import TimeServerAddress, fetch_responses
from uptane import roughtime as rt
from uptane.errors import BadSignature, TimeReplay, UptaneError

L = rt.PRIMARY_LIMITS


def nonce() -> bytes:
    return os.urandom(rt.NONCE_BYTES)


def fetch_one(address: TimeServerAddress, n: bytes) -> bytes:
    (response,) = fetch_responses([address], n, timeout=2.0, retries=2)
    assert response is not None, "the time server did not answer"
    return response


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- keys and the process --------------------------------------------------------------------


def test_init_keeps_the_long_term_key_offline_at_0600_and_publishes_its_public_key(keys: Keys):
    assert mode(keys.offline / "longterm.key") == 0o600
    assert mode(keys.online / "delegation.json") == 0o600
    assert mode(keys.offline / "longterm.pub") == 0o644
    assert not (keys.online / "longterm.key").exists()
    assert (keys.online / "longterm.pub").read_bytes() == (
        keys.offline / "longterm.pub"
    ).read_bytes()
    again = cli("init", "--keys", str(keys.offline), "--online", str(keys.online))
    assert again.returncode == 2 and "use `delegate`" in again.stderr


def test_serve_prints_its_address_key_id_and_draft(keys: Keys, server: Running):
    assert rt.DRAFT in server.banner and "0x8000000b" in server.banner
    assert rt.server_id(keys.public).hex() in server.banner
    assert server.address.host == "127.0.0.1" and server.address.port > 0


def test_serve_refuses_a_directory_that_holds_the_long_term_private_key(keys: Keys):
    shutil.copy(keys.offline / "longterm.key", keys.online / "longterm.key")
    done = cli("serve", "--online", str(keys.online), "--port", "0")
    assert done.returncode == 2 and "move it offline" in done.stderr


def test_serve_refuses_an_expired_delegation_and_says_to_renew_it(keys: Keys):
    past = int(time.time()) - 10 * rt.DAY
    renewed = cli(
        "delegate", "--keys", str(keys.offline), "--online", str(keys.online),
        "--days", "1", "--not-before", str(past),
    )  # fmt: skip
    assert renewed.returncode == 0, renewed.stderr
    done = cli("serve", "--online", str(keys.online), "--port", "0")
    assert done.returncode == 2 and "uptane-time-server delegate" in done.stderr


@pytest.mark.slow
def test_a_delegation_that_expires_while_serving_stops_the_answers(keys: Keys):
    # a window ending 6 s from now (days=1 starting a day earlier): serve starts inside it
    ends = int(time.time()) + 6
    renewed = cli(
        "delegate", "--keys", str(keys.offline), "--online", str(keys.online),
        "--days", "1", "--not-before", str(ends - rt.DAY),
    )  # fmt: skip
    assert renewed.returncode == 0, renewed.stderr
    with serving(keys) as running:
        while int(time.time()) <= ends + 1:
            time.sleep(0.5)
        got = fetch_responses([running.address], nonce(), timeout=0.5, retries=1)
        running.proc.terminate()
        _, stderr = running.proc.communicate(timeout=10)
    assert got == [None]
    assert "outside the delegation's window" in stderr and "delegate" in stderr


def test_delegate_renews_with_a_new_online_key_that_clients_accept(keys: Keys):
    before = (keys.online / "delegation.json").read_text()
    done = cli("delegate", "--keys", str(keys.offline), "--online", str(keys.online))
    assert done.returncode == 0, done.stderr
    assert (keys.online / "delegation.json").read_text() != before
    with serving(keys) as running:
        n = nonce()
        rt.verify_response(fetch_one(running.address, n), n, [keys.key()], L)


# --- time from a real server -----------------------------------------------------------------


def test_time_from_a_real_server_verifies_against_the_provisioned_key(keys: Keys, server: Running):
    n = nonce()
    before = int(time.time())
    verified = rt.verify_response(fetch_one(server.address, n), n, [keys.key()], L)
    after = int(time.time())
    assert verified.radius == rt.MIN_RADIUS and verified.server == "oem-time"
    assert before - verified.radius <= verified.midpoint <= after + verified.radius


def test_requests_arriving_together_are_answered_from_one_tree_and_one_signature(keys: Keys):
    with serving(keys, "--batch-window", "0.5") as running:
        nonces = [nonce() for _ in range(6)]
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in nonces]
        try:
            for sock, n in zip(socks, nonces, strict=True):
                sock.settimeout(10)
                sock.sendto(rt.build_request(n), (running.address.host, running.address.port))
            responses = [sock.recv(65535) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
    parsed = [rt.parse_response(r, L) for r in responses]
    assert len({p.signed_response for p in parsed}) == 1  # one SREP, one signature
    assert sorted(p.index for p in parsed) == list(range(6))
    for n, r in zip(nonces, responses, strict=True):
        rt.verify_response(r, n, [keys.key()], L)


def test_two_servers_agree_and_every_ecu_verifies_the_token_its_primary_forwards(tmp_path: Path):
    a, b = make_keys(tmp_path, "a"), make_keys(tmp_path, "b")
    keys = [a.key("a"), b.key("b")]
    ecu_nonces = [os.urandom(16) for _ in range(3)]
    commitment = rt.commit_nonces(ecu_nonces)
    with serving(a) as sa, serving(b) as sb:
        responses = fetch_responses([sa.address, sb.address], commitment.nonce, timeout=2.0)
    assert all(responses)
    got = [r for r in responses if r is not None]
    for r in got:  # the Primary checks the time for itself first
        rt.verify_response(r, commitment.nonce, keys, L)
    policy = rt.TimePolicy(min_servers=2)
    last = int(time.time()) - 61 * rt.DAY  # two months offline
    for i, ecu_nonce in enumerate(ecu_nonces):
        token = commitment.token(i, got).to_bytes()
        decision = rt.accept_token(token, ecu_nonce, keys, policy, last, rt.CONSTRAINED_LIMITS)
        assert decision.servers == 2 and decision.latest > last
    with pytest.raises(TimeReplay):  # an ECU whose nonce the Primary left out
        rt.accept_token(commitment.token(0, got).to_bytes(), os.urandom(16), keys, policy, last, L)


# --- refusals, each with its named error ------------------------------------------------------


def test_time_signed_by_an_unknown_key_is_refused(tmp_path: Path, server: Running):
    stranger = make_keys(tmp_path, "stranger")
    n = nonce()
    with pytest.raises(BadSignature):
        rt.verify_response(fetch_one(server.address, n), n, [stranger.key()], L)


def test_a_replayed_response_to_an_old_nonce_is_refused(keys: Keys, server: Running):
    old = nonce()
    recorded = fetch_one(server.address, old)
    with pytest.raises(TimeReplay, match="another request's nonce"):
        rt.verify_response(recorded, nonce(), [keys.key()], L)


def test_a_good_signature_whose_merkle_proof_lacks_this_nonce_is_refused(
    keys: Keys, server: Running
):
    a, b = nonce(), nonce()
    genuine = fetch_one(server.address, a)
    msg = rt.decode_message(rt.decode_packet(genuine, L), L)
    msg[rt.NONC] = b  # the unsigned NONC rewritten; ROOT, PATH, INDX are a's
    forged = rt.encode_packet(rt.encode_message(msg))
    with pytest.raises(TimeReplay, match="Merkle proof does not contain this nonce"):
        rt.verify_response(forged, b, [keys.key()], L)


def test_every_truncation_of_a_real_response_is_refused_with_a_named_error(
    keys: Keys, server: Running
):
    n = nonce()
    response = fetch_one(server.address, n)
    for cut in range(len(response)):
        with pytest.raises(UptaneError):
            rt.verify_response(response[:cut], n, [keys.key()], L)
    with pytest.raises(UptaneError):
        rt.verify_response(response + b"\x00" * 4, n, [keys.key()], L)


def test_garbage_short_and_foreign_requests_get_no_answer_and_serving_goes_on(
    tmp_path: Path, keys: Keys, server: Running
):
    where = (server.address.host, server.address.port)
    short = rt.encode_packet(
        rt.encode_message({rt.VER: struct.pack("<I", rt.VERSION), rt.NONC: nonce()})
    )
    other = make_keys(tmp_path, "other").public
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for junk in (os.urandom(1100), b"", short, rt.build_request(nonce(), server_key=other)):
            sock.sendto(junk, where)
            with pytest.raises(TimeoutError):
                sock.recv(65535)
    n = nonce()
    rt.verify_response(fetch_one(server.address, n), n, [keys.key()], L)
