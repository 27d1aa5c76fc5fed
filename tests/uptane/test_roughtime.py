"""Roughtime in the core (uptane/roughtime.py, draft-ietf-ntp-roughtime-11): the wire
format as the draft lays it out, the checks of §6.4 with a named error for each refusal,
the Primary's nonce commitment as an ECU verifies it, and the clock policy.

Responses are built with the module's own server half (``sign_batch``) and real Ed25519
keys; tampered responses are re-encoded field by field, so each test breaks one thing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uptane import roughtime as rt
from uptane.errors import (
    BadSignature,
    EndlessDataAttack,
    ExpiredTimeDelegation,
    LimitExceeded,
    MalformedInput,
    ProtocolVersionMismatch,
    ReplayAttack,
    TimeJumpRefused,
    TimeQuorumNotMet,
    TimeReplay,
    UptaneError,
    error_from_code,
)

L = rt.PRIMARY_LIMITS
NOW = 1_790_000_000
DAY = rt.DAY


class Server:
    """A time server's keys, in memory: a long-term key and a delegated online key."""

    def __init__(self, name: str = "oem-time-1", mint: int = NOW - DAY, maxt: int = NOW + DAY):
        self.long_term = Ed25519PrivateKey.generate()
        self.online = Ed25519PrivateKey.generate()
        self.cert = rt.make_certificate(self.long_term, rt.public_bytes(self.online), mint, maxt)
        self.key = rt.TimeServerKey(name, rt.public_bytes(self.long_term))

    def answer(self, *nonces: bytes, midpoint: int = NOW, radius: int = 3) -> list[bytes]:
        return rt.sign_batch(
            nonces, midpoint=midpoint, radius=radius, certificate=self.cert, online_key=self.online
        )


def nonce() -> bytes:
    return os.urandom(rt.NONCE_BYTES)


def fields(packet: bytes) -> dict[int, bytes]:
    return rt.decode_message(rt.decode_packet(packet, L), L)


def rewrite(packet: bytes, **changes: bytes) -> bytes:
    """The packet with top-level tags replaced (by name), re-encoded; signatures untouched."""
    msg = fields(packet)
    msg.update({rt.tag(name): value for name, value in changes.items()})
    return rt.encode_packet(rt.encode_message(msg))


def h(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()[:32]


# --- the wire format, as the draft lays it out ----------------------------------------------


def test_tags_have_the_values_of_the_drafts_registry():
    # draft 11 §13.3, table 2
    assert rt.SIG == 0x00474953 and rt.VER == 0x00524556 and rt.SRV == 0x00565253
    assert rt.NONC == 0x434E4F4E and rt.DELE == 0x454C4544 and rt.PATH == 0x48544150
    assert rt.RADI == 0x49444152 and rt.PUBK == 0x4B425550 and rt.MIDP == 0x5044494D
    assert rt.SREP == 0x50455253 and rt.MINT == 0x544E494D and rt.ROOT == 0x544F4F52
    assert rt.CERT == 0x54524543 and rt.MAXT == 0x5458414D and rt.INDX == 0x58444E49
    assert rt.ZZZZ == 0x5A5A5A5A
    assert rt.VERSION == 0x80000000 + 11


def test_message_header_is_count_offsets_then_ascending_tags():
    msg = rt.encode_message({rt.NONC: b"n" * 32, rt.VER: b"\x0b\x00\x00\x80"})
    # 2 pairs; one explicit offset (the second value starts 4 bytes in); VER < NONC
    assert msg[:12] == struct.pack("<III", 2, 4, rt.VER)
    assert msg[12:16] == b"NONC"  # ASCII in natural bytewise order (§5.1.4)
    assert msg[16:] == b"\x0b\x00\x00\x80" + b"n" * 32
    assert rt.decode_message(msg, L) == {rt.VER: b"\x0b\x00\x00\x80", rt.NONC: b"n" * 32}


def test_packet_starts_with_roughtim_and_the_message_length():
    packet = rt.encode_packet(b"\x01\x00\x00\x00" + b"SIG\x00")
    assert packet[:8] == b"ROUGHTIM" and packet[8:12] == struct.pack("<I", 8)


def test_request_is_padded_to_1024_bytes_and_names_the_expected_server_key():
    server, n = Server(), nonce()
    packet = rt.build_request(n, server_key=server.key.public_key)
    assert len(packet) - 12 == rt.MIN_REQUEST_BYTES
    msg = fields(packet)
    assert msg[rt.NONC] == n and set(msg[rt.ZZZZ]) == {0}
    assert msg[rt.SRV] == h(b"\xff" + server.key.public_key)  # §6.1.3
    assert rt.parse_request(packet, L) == rt.Request(n, (rt.VERSION,), msg[rt.SRV])


def test_signature_contexts_are_the_drafts_with_their_zero_byte():
    assert rt.DELEGATION_CONTEXT == b"RoughTime v1 delegation signature--\x00"
    assert rt.RESPONSE_CONTEXT == b"RoughTime v1 response signature\x00"


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8, 9, 33])
def test_merkle_path_leads_every_nonce_of_a_batch_to_the_root(count: int):
    nonces = [nonce() for _ in range(count)]
    root, paths = rt.merkle_tree(nonces)
    for i, (n, path) in enumerate(zip(nonces, paths, strict=True)):
        assert rt.root_from_path(n, i, path, 32) == root
    assert len(paths[0]) == 32 * (count - 1).bit_length()


def test_merkle_tree_of_four_is_the_drafts_leaf_and_node_hashes():
    n = [bytes([i]) * 32 for i in range(4)]
    leaf = [h(b"\x00" + x) for x in n]
    left, right = h(b"\x01" + leaf[0] + leaf[1]), h(b"\x01" + leaf[2] + leaf[3])
    root, paths = rt.merkle_tree(n)
    assert root == h(b"\x01" + left + right)
    # PATH: siblings from the leaf up; an even INDX bit means this side is the left child
    assert paths[2] == leaf[3] + left


def test_6_2_4_a_response_to_a_single_request_has_an_empty_path():
    server = Server()
    assert fields(server.answer(nonce())[0])[rt.PATH] == b""


def test_6_1_responses_are_never_larger_than_a_request():
    server = Server()
    responses = server.answer(*[nonce() for _ in range(1024)])
    assert max(len(r) for r in responses) <= rt.MIN_REQUEST_BYTES + 12


# --- §6.4: a valid response, and each refusal by name ----------------------------------------


def test_6_4_response_verifies_and_gives_the_midpoint_and_radius():
    server, n = Server(), nonce()
    verified = rt.verify_response(server.answer(nonce(), n)[1], n, [server.key], L)
    assert verified == rt.VerifiedTime(NOW, 3, "oem-time-1")
    assert (verified.earliest, verified.latest) == (NOW - 3, NOW + 3)


def test_6_4_the_right_key_is_found_among_several_provisioned():
    a, b, n = Server("a"), Server("b"), nonce()
    assert rt.verify_response(b.answer(n)[0], n, [a.key, b.key], L).server == "b"


def test_6_4_time_signed_by_an_unknown_key_is_bad_signature():
    server, stranger, n = Server(), Server("stranger"), nonce()
    with pytest.raises(BadSignature, match="not signed by a provisioned time server key"):
        rt.verify_response(stranger.answer(n)[0], n, [server.key], L)


def test_6_4_a_delegation_for_another_online_key_is_bad_signature():
    server, n = Server(), nonce()
    forged_online = Ed25519PrivateKey.generate()
    # keep the genuine CERT signature, swap the delegated key inside DELE
    cert = rt.decode_message(server.cert, L)
    dele = rt.decode_message(cert[rt.DELE], L)
    dele[rt.PUBK] = rt.public_bytes(forged_online)
    cert[rt.DELE] = rt.encode_message(dele)
    server.cert, server.online = rt.encode_message(cert), forged_online
    with pytest.raises(BadSignature):
        rt.verify_response(server.answer(n)[0], n, [server.key], L)


def test_6_4_a_changed_midpoint_breaks_the_response_signature():
    server, n = Server(), nonce()
    packet = server.answer(n)[0]
    srep = rt.decode_message(fields(packet)[rt.SREP], L)
    srep[rt.MIDP] = struct.pack("<Q", NOW + 365 * DAY)
    with pytest.raises(BadSignature, match="SREP not signed by its delegated key"):
        rt.verify_response(rewrite(packet, SREP=rt.encode_message(srep)), n, [server.key], L)


@pytest.mark.parametrize("midpoint", [NOW - 2 * DAY, NOW + 2 * DAY])
def test_6_4_midpoint_outside_the_delegation_window_is_an_expired_delegation(midpoint: int):
    server, n = Server(mint=NOW - DAY, maxt=NOW + DAY), nonce()
    with pytest.raises(ExpiredTimeDelegation, match="must renew the delegation"):
        rt.verify_response(server.answer(n, midpoint=midpoint)[0], n, [server.key], L)


def test_6_4_a_replayed_response_to_an_old_nonce_is_a_replay():
    server, old, new = Server(), nonce(), nonce()
    replayed = server.answer(old)[0]
    with pytest.raises(TimeReplay, match="another request's nonce"):
        rt.verify_response(replayed, new, [server.key], L)


def test_6_4_good_signatures_but_a_merkle_proof_without_this_nonce_is_a_replay():
    server, ours = Server(), nonce()
    # a genuine batch that did not contain our nonce; NONC (unsigned) rewritten to ours
    genuine = server.answer(nonce(), nonce(), nonce())[1]
    forged = rewrite(genuine, NONC=ours)
    with pytest.raises(TimeReplay, match="Merkle proof does not contain this nonce"):
        rt.verify_response(forged, ours, [server.key], L)
    with pytest.raises(TimeReplay):  # nor at another index
        rt.verify_response(rewrite(forged, INDX=struct.pack("<I", 0)), ours, [server.key], L)
    assert issubclass(TimeReplay, ReplayAttack)


def test_6_3_1_indx_bits_beyond_the_path_are_refused():
    server, n = Server(), nonce()
    packet = server.answer(n, nonce())[0]
    with pytest.raises(MalformedInput, match="bits beyond"):
        rt.verify_response(rewrite(packet, INDX=struct.pack("<I", 2)), n, [server.key], L)


def test_a_response_of_another_draft_version_is_a_version_mismatch():
    server, n = Server(), nonce()
    other = rewrite(server.answer(n)[0], VER=struct.pack("<I", 0x80000008))
    with pytest.raises(ProtocolVersionMismatch):
        rt.verify_response(other, n, [server.key], L)


# --- bounded decoding ------------------------------------------------------------------------


def test_a_packet_over_the_byte_cap_is_endless_data():
    with pytest.raises(EndlessDataAttack):
        rt.decode_packet(b"ROUGHTIM" + b"\x00" * 5000, L)


def test_a_message_with_more_tags_than_the_cap_is_refused():
    many = {rt.tag(a + b + "AA"): b"" for a in "ABCDE" for b in "ABCD"}
    with pytest.raises(LimitExceeded):
        rt.decode_message(rt.encode_message(many), L)


def test_a_merkle_path_deeper_than_the_cap_is_refused_before_any_signature_check():
    server, n = Server(), nonce()
    deep = rewrite(server.answer(n)[0], PATH=b"\x00" * 32 * 17)
    with pytest.raises(LimitExceeded):
        rt.verify_response(deep, n, [server.key], rt.TimeLimits(max_path_depth=16))


@pytest.mark.parametrize(
    "message",
    [
        struct.pack("<I", 0),  # no tags
        struct.pack("<II", 2, 0),  # header cut short
        struct.pack("<IIII", 2, 8, rt.VER, rt.NONC) + b"\x00" * 4,  # offset past the end
        struct.pack("<IIII", 2, 2, rt.VER, rt.NONC) + b"\x00" * 8,  # offset not a multiple of 4
        struct.pack("<IIII", 2, 4, rt.NONC, rt.VER) + b"\x00" * 8,  # tags not ascending
        struct.pack("<IIII", 2, 4, rt.VER, rt.VER) + b"\x00" * 8,  # a tag twice
        struct.pack("<II", 1, 0x61626364) + b"\x00" * 4,  # lower-case tag
        struct.pack("<II", 1, rt.VER) + b"\x00" * 3,  # not whole words
    ],
)
def test_5_2_header_rules_are_enforced(message: bytes):
    with pytest.raises(MalformedInput):
        rt.decode_message(message, L)


def test_6_1_a_request_shorter_than_1024_bytes_is_not_answered():
    short = rt.encode_packet(
        rt.encode_message({rt.VER: struct.pack("<I", rt.VERSION)} | {rt.NONC: nonce()})
    )
    with pytest.raises(MalformedInput, match="padded to 1024"):
        rt.parse_request(short, L)


def test_6_1_a_request_padded_to_1024_bytes_as_a_whole_packet_is_answered():
    msg = fields(rt.build_request(nonce()))
    msg[rt.ZZZZ] = msg[rt.ZZZZ][12:]  # 1024 bytes with the packet header, 1012 without
    packet = rt.encode_packet(rt.encode_message(msg))
    assert len(packet) == rt.MIN_REQUEST_BYTES
    assert rt.parse_request(packet, L).nonce == msg[rt.NONC]


def test_6_1_1_a_request_without_this_drafts_version_is_a_version_mismatch():
    msg = fields(rt.build_request(nonce()))
    msg[rt.VER] = struct.pack("<II", 1, 0x80000008)
    with pytest.raises(ProtocolVersionMismatch):
        rt.parse_request(rt.encode_packet(rt.encode_message(msg)), L)
    msg[rt.VER] = struct.pack("<II", rt.VERSION, rt.VERSION)
    with pytest.raises(MalformedInput, match="repeats"):
        rt.parse_request(rt.encode_packet(rt.encode_message(msg)), L)


GARBLE = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
_SERVER = Server()
_NONCE = bytes(32)
_VALID = _SERVER.answer(nonce(), _NONCE, nonce())[1]


@GARBLE
@given(cut=st.integers(0, len(_VALID) - 1))
def test_every_truncation_of_a_response_raises_only_named_errors(cut: int):
    with pytest.raises(UptaneError):
        rt.verify_response(_VALID[:cut], _NONCE, [_SERVER.key], L)


@GARBLE
@given(
    flips=st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(1, 255)), max_size=6),
    tail=st.binary(max_size=64),
)
def test_a_garbled_response_raises_only_named_errors(flips: list[tuple[int, int]], tail: bytes):
    data = bytearray(_VALID)
    for pos, xor in flips:
        data[pos] ^= xor
    with contextlib.suppress(UptaneError):
        rt.verify_response(bytes(data) + tail, _NONCE, [_SERVER.key], L)


# --- a Primary's commitment to its ECUs' nonces, as each ECU checks it ------------------------


def ecus(count: int) -> list[bytes]:
    return [os.urandom(16) for _ in range(count)]


def test_every_ecu_finds_its_own_nonce_through_the_primary_commitment():
    server, nonces = Server(), ecus(5)
    commitment = rt.commit_nonces(nonces)
    response = server.answer(nonce(), commitment.nonce)[1]  # batched with another client
    for i, ecu_nonce in enumerate(nonces):
        token = commitment.token(i, [response]).to_bytes()
        decision = rt.accept_token(
            token, ecu_nonce, [server.key], rt.TimePolicy(), NOW - DAY, rt.CONSTRAINED_LIMITS
        )
        assert decision.latest == NOW and decision.servers == 1 and decision.refused == ()


def test_an_ecu_whose_nonce_is_not_in_the_commitment_gets_a_replay():
    server, nonces = Server(), ecus(3)
    commitment = rt.commit_nonces(nonces)
    token = commitment.token(0, server.answer(commitment.nonce)).to_bytes()
    with pytest.raises(TimeReplay):
        rt.accept_token(token, os.urandom(16), [server.key], rt.TimePolicy(), NOW, L)


def test_a_token_of_an_older_cycle_is_a_replay_for_the_ecus_new_nonce():
    server, old = Server(), ecus(2)
    commitment = rt.commit_nonces(old)
    token = commitment.token(1, server.answer(commitment.nonce)).to_bytes()
    with pytest.raises(TimeReplay):
        rt.accept_token(token, os.urandom(16), [server.key], rt.TimePolicy(), NOW, L)


def test_a_token_carries_several_servers_responses_and_round_trips():
    a, b, nonces = Server("a"), Server("b"), ecus(2)
    commitment = rt.commit_nonces(nonces)
    token = commitment.token(1, [*a.answer(commitment.nonce), *b.answer(commitment.nonce)])
    assert rt.TimeToken.from_bytes(token.to_bytes(), rt.CONSTRAINED_LIMITS) == token
    verified, refused = rt.verify_token(token.to_bytes(), nonces[1], [a.key, b.key], L)
    assert sorted(v.server for v in verified) == ["a", "b"] and refused == []


def test_a_token_with_more_responses_than_the_cap_is_refused():
    server, nonces = Server(), ecus(1)
    commitment = rt.commit_nonces(nonces)
    token = commitment.token(0, server.answer(commitment.nonce) * 5).to_bytes()
    with pytest.raises(LimitExceeded):
        rt.TimeToken.from_bytes(token, rt.CONSTRAINED_LIMITS)


def test_a_bad_response_among_agreeing_servers_is_reported_not_fatal():
    a, b, stranger, nonces = Server("a"), Server("b"), Server("x"), ecus(1)
    commitment = rt.commit_nonces(nonces)
    responses = [a.answer(commitment.nonce)[0], stranger.answer(commitment.nonce)[0]]
    responses.append(b.answer(commitment.nonce)[0])
    token = commitment.token(0, responses).to_bytes()
    policy = rt.TimePolicy(min_servers=2)
    decision = rt.accept_token(token, nonces[0], [a.key, b.key], policy, NOW - DAY, L)
    assert decision.servers == 2 and decision.latest == NOW
    assert [type(e) for e in decision.refused] == [BadSignature]


# --- the clock policy ------------------------------------------------------------------------


def vt(server: str, midpoint: int, radius: int = 3) -> rt.VerifiedTime:
    return rt.VerifiedTime(midpoint, radius, server)


def test_k_of_n_servers_whose_intervals_overlap_set_the_time_to_their_intersection():
    agreed, count = rt.agreement([vt("a", NOW, 10), vt("b", NOW + 15, 10), vt("c", NOW + 9)], 2)
    assert count == 3  # [NOW+6, NOW+10] is in all three
    assert (agreed.earliest, agreed.latest) == (NOW + 6, NOW + 10)
    assert agreed.server == "a+b+c"


def test_fewer_agreeing_servers_than_k_is_quorum_not_met():
    with pytest.raises(TimeQuorumNotMet, match="1 of 2 time servers agree"):
        rt.agreement([vt("a", NOW), vt("b", NOW + DAY)], 2)
    with pytest.raises(TimeQuorumNotMet):
        rt.agreement([], 1)


def test_one_server_counts_once_however_many_responses_it_sends():
    with pytest.raises(TimeQuorumNotMet):
        rt.agreement([vt("a", NOW), vt("a", NOW + 1), vt("a", NOW + 2)], 2)


def test_a_step_beyond_the_bound_is_refused_when_too_few_servers_agree():
    policy = rt.TimePolicy(max_step=30 * DAY, jump_servers=2)
    with pytest.raises(TimeJumpRefused, match="configure more time servers"):
        rt.decide_time(NOW - 31 * DAY, [vt("a", NOW)], policy)


def test_a_step_beyond_the_bound_is_accepted_when_enough_servers_agree():
    policy = rt.TimePolicy(max_step=30 * DAY, jump_servers=2)
    decision = rt.decide_time(NOW - 400 * DAY, [vt("a", NOW), vt("b", NOW + 1)], policy)
    assert decision.latest in (NOW, NOW + 1) and decision.servers == 2


def test_two_months_offline_is_within_the_default_bound_with_one_server():
    decision = rt.decide_time(NOW - 61 * DAY, [vt("a", NOW)], rt.TimePolicy())
    assert decision.latest == NOW


def test_far_future_signed_time_from_one_server_is_refused_by_the_default_policy():
    with pytest.raises(TimeJumpRefused):
        rt.decide_time(NOW, [vt("a", 253_402_300_799)], rt.TimePolicy())


def test_time_far_behind_the_last_verified_time_is_refused_and_never_applied():
    with pytest.raises(TimeJumpRefused, match="never moves back"):
        rt.decide_time(NOW, [vt("a", NOW - 2 * DAY)], rt.TimePolicy())


def test_time_slightly_behind_keeps_the_last_verified_time():
    assert rt.decide_time(NOW, [vt("a", NOW - 60)], rt.TimePolicy()).latest == NOW


def test_time_errors_have_stable_codes_and_policy_errors_are_not_attack_names():
    for cls in (TimeReplay, ExpiredTimeDelegation, TimeJumpRefused, TimeQuorumNotMet):
        assert type(error_from_code(cls.code)) is cls
    assert TimeJumpRefused.attack == "time-policy" and TimeQuorumNotMet.attack == "time-quorum"
    assert ExpiredTimeDelegation.attack == "time-delegation-expired"
    assert TimeReplay.attack == "replay"
