"""Hostile input to the standard DER decoders (uptane/encoding/uptane_der.py, the targets
walk of uptane_targets.py): indefinite lengths and other BER forms, huge lengths, deep
nesting, counts that lie, a signature hash that is not the signed part's, values the
modules do not have. Each is refused with the project's own error, bounded by Limits,
whichever decoder meets it; and what the modules cannot hold is refused by the encoder.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from der_tree import dump_tree, parse_tree, tlv

from uptane.codec import DER_CODEC
from uptane.errors import (
    EndlessDataAttack,
    LimitExceeded,
    MalformedInput,
    NonCanonicalEncoding,
    UnsupportedAlgorithm,
    UptaneError,
)
from uptane.keys import PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.manifest import EcuVersionReport, InstalledImage, SignedManifest
from uptane.metadata import (
    DER,
    DelegatedRole,
    Delegations,
    Metadata,
    Root,
    TargetFile,
    Targets,
)

EXPIRES = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
KEY = PrivateKey.generate()


def _targets_bytes() -> bytes:
    entry = TargetFile.from_data(
        "fw.bin", b"fw", ("sha256",), hardware_ids=["hw"], release_counter=3, ecu_ids={"E1": "hw"}
    )
    md = Metadata(
        Targets(version=2, expires=EXPIRES, targets={"fw.bin": entry}, vehicle_id="VIN"),
        encoding=DER,
    )
    md.sign(KEY)
    return md.to_bytes()


def _root_bytes(consistent: bool) -> bytes:
    root = Root(expires=EXPIRES, keys={}, roles={}, consistent_snapshot=consistent)
    for role in ("root", "timestamp", "snapshot", "targets"):
        root.add_key(KEY.key, role)
    md = Metadata(root, encoding=DER)
    md.sign(KEY)
    return md.to_bytes()


def _delegating_bytes() -> bytes:
    d = Delegations({KEY.keyid: KEY.key}, [DelegatedRole("a", [KEY.keyid], 1, paths=["*"])])
    md = Metadata(Targets(expires=EXPIRES, delegations=d), encoding=DER)
    md.sign(KEY)
    return md.to_bytes()


TARGETS = _targets_bytes()


def _refused(
    data: bytes, error: type[UptaneError], *, walk: bool = True, limits_list=(PRIMARY, CONSTRAINED)
) -> UptaneError:
    """Every decoder that may meet ``data`` refuses it with ``error`` (a subclass of it)."""
    found = None
    for limits in limits_list:
        with pytest.raises(error) as e:
            DER_CODEC.decode_metadata(data, limits)
        found = e.value
        if walk:
            with pytest.raises(error):
                DER_CODEC.read_targets(data, limits, "E1")
    assert found is not None
    return found


def _content_start(data: bytes) -> int:
    """Where the contents of the TLV at the start of ``data`` begin."""
    return 2 + (data[1] & 0x7F if data[1] >= 0x80 else 0)


def _edit(data: bytes, change: Callable[[list[Any]], None]) -> bytes:
    tree = parse_tree(data)
    change(tree)
    return dump_tree(tree)


# tree paths of standard targets metadata: Metadata > signed [0] > body [3] > targets [1]
def _signed(t: list[Any]) -> list[Any]:
    return t[0][1][0]


def _targets_body(t: list[Any]) -> list[Any]:
    return _signed(t)[1][3][1][0]


def _entry(t: list[Any]) -> list[Any]:
    return _targets_body(t)[1][1][1][0]  # the first TargetAndCustom


def _signature(t: list[Any]) -> list[Any]:
    return t[0][1][2][1][0]


def _rehash(t: list[Any]) -> None:
    """Make every signature's hash the SHA-256 of the signed part as it now stands, so
    only the change under test is wrong."""
    digest = hashlib.sha256(dump_tree([_signed(t)])).digest()
    for sig in t[0][1][2][1]:
        sig[1][2][1][1][1] = digest


def test_the_seed_is_valid():
    md = DER_CODEC.decode_metadata(TARGETS, CONSTRAINED)
    assert md.to_bytes() == TARGETS
    assert DER_CODEC.read_targets(TARGETS, CONSTRAINED, "E1").mine is not None


# --- BER forms and lengths --------------------------------------------------------------------


def test_indefinite_lengths_are_refused():
    inner = TARGETS[_content_start(TARGETS) :]
    _refused(b"\x30\x80" + inner + b"\x00\x00", NonCanonicalEncoding)
    # nested: the signed part [0] with an indefinite length
    tree = parse_tree(TARGETS)
    signed = dump_tree([_signed(tree)])
    rest = dump_tree(tree[0][1][1:])
    nested = b"\xa0\x80" + signed[_content_start(signed) :] + b"\x00\x00" + rest
    _refused(tlv(0x30, nested), NonCanonicalEncoding)


def test_non_minimal_lengths_are_refused():
    inner = TARGETS[_content_start(TARGETS) :]
    # the outer length with a leading zero octet, and a long form where the short one fits
    _refused(b"\x30\x82\x00" + bytes([len(inner)]) + inner, NonCanonicalEncoding)
    version = bytes([0x82, 0x81, 0x01, 0x02])  # version [2] 2 with a long-form length
    assert b"\x82\x01\x02" in inner
    _refused(tlv(0x30, inner.replace(b"\x82\x01\x02", version, 1)), NonCanonicalEncoding)


def test_huge_lengths_are_endless_data():
    _refused(b"\x30\x84\x7f\xff\xff\xff" + b"\x00" * 64, EndlessDataAttack)
    _refused(b"\x30\x85\x01\x00\x00\x00\x00" + b"\x00" * 64, EndlessDataAttack)
    _refused(TARGETS + b"\x00" * (PRIMARY.role_bytes["targets"] + 1), EndlessDataAttack)


def test_deep_nesting_and_too_many_elements_are_bounded():
    deep = b"\x05\x00"
    for _ in range(200):
        deep = tlv(0x30, deep)
    _refused(deep, LimitExceeded)
    # more children in one value than the largest count cap allows
    many = tlv(0x30, b"\x05\x00" * 5000)
    _refused(many, LimitExceeded, limits_list=(CONSTRAINED,))
    per_value = 16 + PRIMARY.max_targets + 1
    _refused(tlv(0x30, b"\x05\x00" * per_value), LimitExceeded, limits_list=(PRIMARY,))


def test_trailing_and_missing_bytes_are_refused():
    _refused(TARGETS + b"\x00", MalformedInput)
    for cut in (1, 2, 40, len(TARGETS) // 2, len(TARGETS) - 1):
        _refused(TARGETS[:cut], MalformedInput)
    _refused(b"", MalformedInput)


def test_non_minimal_integers_and_enumerations_are_refused():
    def version(t: list[Any]) -> None:
        _signed(t)[1][2][1] = b"\x00\x02"
        _rehash(t)

    _refused(_edit(TARGETS, version), NonCanonicalEncoding)

    def role_type(t: list[Any]) -> None:
        _signed(t)[1][0][1] = b"\x00\x01"  # type targets (1) as an ENUMERATED 00 01
        _rehash(t)

    _refused(_edit(TARGETS, role_type), NonCanonicalEncoding)


def test_ber_booleans_and_default_values_spelled_out_are_refused():
    root = _root_bytes(True)
    assert b"\x84\x01\xff" in root
    _refused(root.replace(b"\x84\x01\xff", b"\x84\x01\x01"), NonCanonicalEncoding, walk=False)

    # consistentSnapshot FALSE written out: DEFAULT FALSE is left out in DER
    def spelled(t: list[Any]) -> None:
        _signed(t)[1][3][1][0][1].append([0x84, b"\x00"])
        _rehash(t)

    _refused(_edit(_root_bytes(False), spelled), NonCanonicalEncoding, walk=False)

    # terminating FALSE written out in a PathsToRoles of the TAP 3 form
    def terminating(t: list[Any]) -> None:
        rules = _targets_body(t)[1][2][1][3][1]
        rules[0][1].append([0x84, b"\x00"])
        _rehash(t)

    _refused(_edit(_delegating_bytes(), terminating), NonCanonicalEncoding)


def test_constructed_strings_are_refused():
    def constructed(t: list[Any]) -> None:
        filename = _entry(t)[1][0][1][0]
        filename[:] = [0xA0, [[0x1A, b"fw.bin"]]]  # [0] constructed, holding a string
        _rehash(t)

    _refused(_edit(TARGETS, constructed), MalformedInput)
    _refused(tlv(0x30, tlv(0x24, tlv(0x04, b"x"))), NonCanonicalEncoding)


# --- counts, hashes and values the modules do not have ------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["numberOfTargets", "numberOfSignatures", "numberOfHashes"],
)
def test_a_number_of_field_that_does_not_count_its_list_is_refused(where: str):
    def lie(t: list[Any]) -> None:
        node = {
            "numberOfTargets": lambda: _targets_body(t)[1][0],
            "numberOfSignatures": lambda: t[0][1][1],
            "numberOfHashes": lambda: _entry(t)[1][0][1][2],
        }[where]()
        node[1] = bytes([node[1][0] + 1])
        _rehash(t)

    _refused(_edit(TARGETS, lie), MalformedInput)


def test_a_signature_hash_that_is_not_the_signed_parts_is_refused():
    def other_digest(t: list[Any]) -> None:
        digest = _signature(t)[1][2][1][1]
        digest[1] = bytes([digest[1][0] ^ 1]) + digest[1][1:]

    _refused(_edit(TARGETS, other_digest), NonCanonicalEncoding)

    def sha512(t: list[Any]) -> None:
        _signature(t)[1][2][1][0][1] = b"\x03"

    _refused(_edit(TARGETS, sha512), UnsupportedAlgorithm)


def test_enumerated_values_the_modules_do_not_have_are_refused():
    def hash_function(t: list[Any]) -> None:
        _entry(t)[1][0][1][3][1][0][1][0][1] = b"\x09"
        _rehash(t)

    _refused(_edit(TARGETS, hash_function), UnsupportedAlgorithm)

    def method(t: list[Any]) -> None:
        _signature(t)[1][1][1] = b"\x05"

    _refused(_edit(TARGETS, method), UnsupportedAlgorithm)

    def role_type(t: list[Any]) -> None:
        _signed(t)[1][0][1] = b"\x07"
        _rehash(t)

    _refused(_edit(TARGETS, role_type), UnsupportedAlgorithm)


@pytest.mark.parametrize("text", [b"fw\x00.bin", b"fw\x7f.bin", "f\u00e9.bin".encode()])
def test_a_visible_string_holds_only_printable_ascii(text: bytes):
    def change(t: list[Any]) -> None:
        _entry(t)[1][0][1][0][1] = text
        _rehash(t)

    _refused(_edit(TARGETS, change), MalformedInput)


def test_fields_the_schema_does_not_have_are_refused():
    def in_custom(t: list[Any]) -> None:  # Custom: an extension addition it does not know
        _entry(t)[1][1][1].append([0x8D, b"x"])
        _rehash(t)

    _refused(_edit(TARGETS, in_custom), MalformedInput)

    def in_target(t: list[Any]) -> None:  # Target has no extension marker
        _entry(t)[1][0][1].append([0x84, b"x"])
        _rehash(t)

    _refused(_edit(TARGETS, in_target), MalformedInput)

    def body_type(t: list[Any]) -> None:  # type root, body targetsMetadata
        _signed(t)[1][0][1] = b"\x00"
        _rehash(t)

    _refused(_edit(TARGETS, body_type), MalformedInput)


def test_an_ecu_identifier_needs_the_targets_one_hardware_identifier():
    def drop_hw(t: list[Any]) -> None:
        custom = _entry(t)[1][1][1]
        custom[:] = [n for n in custom if n[0] != 0x81]
        _rehash(t)

    _refused(_edit(TARGETS, drop_hw), MalformedInput)


def test_the_walk_and_the_full_decoder_refuse_the_same_hostile_inputs():
    """Byte flips all over a valid file: both decoders accept or both refuse, with errors
    of the same family, and nothing else escapes."""
    for i in range(len(TARGETS)):
        data = bytearray(TARGETS)
        data[i] ^= 0x41
        outcomes = []
        for fn in (
            lambda d: DER_CODEC.decode_metadata(d, CONSTRAINED, role_type="targets"),
            lambda d: DER_CODEC.read_targets(d, CONSTRAINED, "E1"),
        ):
            try:
                fn(bytes(data))
                outcomes.append("ok")
            except MalformedInput:
                outcomes.append("malformed")
            except UptaneError as e:
                outcomes.append(type(e).__name__)
        assert outcomes[0] == outcomes[1], (i, outcomes)


# --- what the modules cannot hold: the encoder refuses ------------------------------------------


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda t: setattr(t, "path", "fw/é.bin"), "printable ASCII"),
        (lambda t: t.hashes.update({"blake2s": "00" * 32}), "blake2s"),
        (lambda t: t.hashes.update({"sha256": "AB" * 32}), "lowercase hex"),
        (lambda t: t.unrecognized.update({"x": 1}), "no place in the modules"),
    ],
)
def test_the_encoder_refuses_what_the_modules_cannot_hold(change: Any, why: str):
    entry = TargetFile.from_data("fw.bin", b"fw", ("sha256",))
    change(entry)
    md = Metadata(Targets(expires=EXPIRES, targets={entry.path: entry}), encoding=DER)
    with pytest.raises(MalformedInput, match=why):
        md.sign(KEY)


def test_the_encoder_refuses_unknown_keys_and_fields():
    root = Root(expires=EXPIRES, keys={}, roles={})
    for role in ("root", "timestamp", "snapshot", "targets"):
        root.add_key(KEY.key, role)
    odd = copy.deepcopy(root)
    odd.keys[KEY.keyid] = dataclasses.replace(KEY.key, scheme="ed25519-ph")  # no PublicKeyType
    with pytest.raises(MalformedInput, match="key type and scheme"):
        Metadata(odd, encoding=DER).sign(KEY)
    odd = copy.deepcopy(root)
    odd.roles["mirrors"] = odd.roles["root"]  # not a RoleType
    with pytest.raises(MalformedInput, match="root role"):
        Metadata(odd, encoding=DER).sign(KEY)
    odd = copy.deepcopy(root)
    odd.unrecognized["x-extra"] = 1
    with pytest.raises(MalformedInput, match="no place in the modules"):
        Metadata(odd, encoding=DER).sign(KEY)


def test_hostile_manifests_are_refused_with_our_errors():
    img = InstalledImage("fw.bin", 2, {"sha256": "00" * 32})
    report = SignedManifest(EcuVersionReport("E1", img, EXPIRES, nonce=b"\x01" * 8), encoding=DER)
    report.sign(KEY)
    data = report.to_bytes()
    assert SignedManifest.from_bytes(data, CONSTRAINED, DER).to_bytes() == data
    for bad in (
        data + b"\x00",
        b"\x30\x80" + data[2:] + b"\x00\x00",
        data[:-3],
        data.replace(b"\x01" * 8, b"\x01" * 7 + b"\x02"),  # the signed nonce changed
    ):
        with pytest.raises(UptaneError):
            SignedManifest.from_bytes(bad, CONSTRAINED, DER)
        with pytest.raises(UptaneError):
            DER_CODEC.decode_manifest(bad, CONSTRAINED)
