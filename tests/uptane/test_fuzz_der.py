"""Fuzzing the DER decoders of both DER codecs (the standard DER of the Uptane modules and
compact-der): random bytes, byte-level mutations and structure-aware mutations of valid
encodings (metadata of every role, ECU version reports, vehicle version manifests). Only
:class:`uptane.errors.UptaneError` may escape, and whatever decodes must re-encode to
exactly the input (one encoding per value)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from der_tree import dump_tree, parse_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uptane.codec import codec_for
from uptane.encoding import der
from uptane.errors import UptaneError
from uptane.keys import ECDSA, ED25519, PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.manifest import EcuVersionReport, InstalledImage, SignedManifest, build_vehicle_manifest
from uptane.metadata import (
    COMPACT_DER,
    DER,
    DelegatedRole,
    Delegations,
    EncryptedImage,
    Metadata,
    MetaFile,
    RoleRef,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from uptane.policy import check_target_name

EXPIRES = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _corpus(encoding: str) -> dict[str, list[bytes]]:
    k1 = PrivateKey.generate(ED25519)
    k2 = PrivateKey.generate(ECDSA)
    root = Root(expires=EXPIRES, keys={}, roles={})
    for role in ("root", "timestamp", "snapshot", "targets"):
        root.add_key(k1.key, role)
    root.add_key(k2.key, "root")
    image = TargetFile.from_data(
        "a/fw.bin",
        b"x" * 50,
        ("sha256", "sha512"),
        hardware_ids=["hw"],
        release_counter=2,
        shall_match={"v": [1, "x"]},
        custom_extra={"e": None},
    )
    director = TargetFile.from_data(
        "a/fw.bin",
        b"x" * 50,
        ("sha256",),
        hardware_ids=["hw"],
        ecu_ids={"E1": "hw", "E2": "hw2"},
        encrypted=EncryptedImage("e", 3, {"sha256": "00" * 32}, b"k" * 16, "aes"),
        url="https://d/x",
    )
    delegations = Delegations(
        {k1.keyid: k1.key},
        [
            DelegatedRole("r1", [k1.keyid], 1, True, paths=["a/*"], hardware_ids=["hw"]),
            DelegatedRole(
                "r2",
                [],
                1,
                path_hash_prefixes=["0"],
                multi_roles=[RoleRef("m1", [k1.keyid], 1), RoleRef("m2", [k1.keyid], 1)],
                min_roles_in_agreement=1,
            ),
        ],
    )
    signed = [
        root,
        Timestamp(expires=EXPIRES, snapshot_meta=MetaFile(3, 10, {"sha256": "11" * 32})),
        Snapshot(expires=EXPIRES, meta={"targets.json": MetaFile(2), "r1.json": MetaFile(1)}),
        Targets(expires=EXPIRES, targets={image.path: image}, delegations=delegations),
        Targets(expires=EXPIRES, targets={director.path: director}, vehicle_id="VIN"),
        # unknown fields: compact-der carries them; the standard DER has no place for them
        Targets(
            expires=EXPIRES,
            vehicle_id="VIN",
            unrecognized={"x": {"y": [1]}} if encoding == COMPACT_DER else {},
        ),
    ]
    metadata = []
    for s in signed:
        md = Metadata(s, encoding=encoding)
        md.sign(k1)
        metadata.append(md.to_bytes())
    img = InstalledImage("a/fw.bin", 50, {"sha256": "22" * 32})
    reports = []
    for i, (ecu, kw) in enumerate(
        [("E1", {"nonce": b"\x01" * 8}), ("E2", {"counter": 7, "attack": "rollback: x"})]
    ):
        r = SignedManifest(
            EcuVersionReport(ecu, img, EXPIRES, release_counter=i, **kw), encoding=encoding
        )
        r.sign(k2 if i else k1)
        reports.append(r)
    vvm = build_vehicle_manifest("VIN", "E1", reports, k1, encoding=encoding, attack="freeze: y")
    return {
        "metadata": metadata,
        "manifests": [r.to_bytes() for r in reports] + [vvm.to_bytes()],
    }


ENCODINGS = (DER, COMPACT_DER)
CORPORA = {enc: _corpus(enc) for enc in ENCODINGS}
ALLS = {enc: c["metadata"] + c["manifests"] for enc, c in CORPORA.items()}
CORPUS, ALL = CORPORA[COMPACT_DER], ALLS[COMPACT_DER]
by_encoding = pytest.mark.parametrize("enc", ENCODINGS)


def _decode_all(data: bytes, enc: str = COMPACT_DER) -> None:
    """Feed ``data`` to every decoder of the DER codec ``enc`` (metadata, manifests, the
    partial-verification walk); only UptaneError may escape, and anything that decodes
    must write back to the same bytes."""
    codec = codec_for(enc)
    for limits in (PRIMARY, CONSTRAINED):
        try:
            md = codec.decode_metadata(data, limits)
        except UptaneError:
            pass
        else:
            assert md.to_bytes() == data
            assert md.signed_bytes == codec.metadata_payload(md.signed)
        try:
            sm = SignedManifest.from_bytes(data, limits, enc)
        except UptaneError:
            pass
        else:
            assert sm.to_bytes() == data
        with contextlib.suppress(UptaneError):
            codec.read_targets(data, limits, "E1")
    for kind in ("ecu_version_report", "vehicle_version_manifest"):
        with contextlib.suppress(UptaneError):
            codec.decode_manifest(data, PRIMARY, kind=kind)


# --- mutations of the TLV tree (der_tree.py) that keep lengths consistent ------------------


def _nodes(tree: list[Any]) -> list[tuple[list[Any], int]]:
    """Every (parent list, index) in the tree, iteratively."""
    out = []
    stack = [tree]
    while stack:
        lst = stack.pop()
        for i, node in enumerate(lst):
            out.append((lst, i))
            if isinstance(node[1], list):
                stack.append(node[1])
    return out


MUTATIONS = ("flip", "insert", "delete", "truncate", "splice")
TREE_OPS = ("content", "tag", "duplicate", "remove", "swap", "wrap", "empty")


@by_encoding
@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(enc, data):
    _decode_all(data, enc)


@by_encoding
@FUZZ
@given(st.binary(max_size=300).map(lambda b: b"\x30" + bytes([min(len(b), 127)]) + b))
def test_fuzz_random_sequences(enc, data):
    _decode_all(data, enc)


@by_encoding
@FUZZ
@given(
    st.integers(0, 1 << 10),
    st.lists(
        st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 1 << 16), st.binary(max_size=8)),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_byte_mutations_of_valid_der(enc, index, ops):
    ALL = ALLS[enc]
    data = bytearray(ALL[index % len(ALL)])
    for op, pos, blob in ops:
        if not data:
            break
        at = pos % len(data)
        if op == "flip":
            data[at] ^= (blob[0] if blob else 0xFF) or 1
        elif op == "insert":
            data[at:at] = blob
        elif op == "delete":
            del data[at : at + 1 + len(blob)]
        elif op == "truncate":
            del data[at:]
        else:
            other = ALL[pos % len(ALL)]
            data[at:] = other[at % len(other) :]
    _decode_all(bytes(data), enc)


@by_encoding
@FUZZ
@given(
    st.integers(0, 1 << 10),
    st.lists(
        st.tuples(st.sampled_from(TREE_OPS), st.integers(0, 1 << 16), st.binary(max_size=40)),
        min_size=1,
        max_size=3,
    ),
)
def test_fuzz_structure_mutations_of_valid_der(enc, index, ops):
    tree = parse_tree(ALLS[enc][index % len(ALLS[enc])])
    for op, pos, blob in ops:
        nodes = _nodes(tree)
        parent, i = nodes[pos % len(nodes)]
        node = parent[i]
        if op == "content":
            if isinstance(node[1], list):
                node[1] = blob
                node[0] &= ~0x20
            else:
                node[1] = blob
        elif op == "tag":
            node[0] = (blob[0] if blob else 0x04) & ~0x1F | (pos % 31)
            if node[0] & 0x20 and not isinstance(node[1], list):
                node[0] &= ~0x20
            elif not node[0] & 0x20 and isinstance(node[1], list):
                node[0] |= 0x20
        elif op == "duplicate":
            parent.insert(i, [node[0], node[1]])
        elif op == "remove" and len(parent) > 1:
            del parent[i]
        elif op == "swap" and len(parent) > 1:
            j = (i + 1) % len(parent)
            parent[i], parent[j] = parent[j], parent[i]
        elif op == "wrap":
            parent[i] = [0x30, [node]]
        elif op == "empty" and isinstance(node[1], list):
            node[1] = []
    _decode_all(dump_tree(tree), enc)


@by_encoding
def test_fuzz_corpus_is_valid(enc):
    """The mutation seeds themselves decode, so the fuzzing starts from real encodings."""
    for data in CORPORA[enc]["metadata"]:
        assert codec_for(enc).decode_metadata(data, PRIMARY).to_bytes() == data
    for data in CORPORA[enc]["manifests"]:
        assert SignedManifest.from_bytes(data, PRIMARY, enc).to_bytes() == data


# --- round-trip property over generated models ------------------------------------------


#: text the integer and string policy (uptane/policy.py) lets into a document: no control
#: character, no lone surrogate; integers are signed 64-bit
def _text(**kw: Any) -> st.SearchStrategy[str]:
    return st.text(st.characters(blacklist_categories=("Cc", "Cs")), **kw)


def _is_name(path: str) -> bool:
    try:
        check_target_name(path)
    except UptaneError:
        return False
    return True


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(_text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_EXTRA = st.dictionaries(_text(max_size=6).map(lambda k: "x-" + k), _JSONISH, max_size=2)
_DIGEST = st.binary(max_size=64).flatmap(
    lambda b: st.sampled_from([b.hex(), b.hex().upper()]) if b else st.just("")
)
_HASHES = st.dictionaries(
    st.sampled_from(["sha256", "sha512", "sha3_256", "whirlpool", "SHA-256"]),
    _DIGEST,
    min_size=1,
    max_size=3,
)
_NAME = _text(min_size=1, max_size=20)
_PATH = _NAME.filter(_is_name)


@st.composite
def _target(draw: Any) -> TargetFile:
    path = draw(_PATH)
    hw = draw(st.lists(_NAME, max_size=3))
    ecus = draw(
        st.dictionaries(_NAME, _NAME if not hw else st.sampled_from(hw) | _NAME, max_size=3)
    )
    enc = draw(
        st.none()
        | st.builds(
            EncryptedImage,
            _PATH,
            st.integers(0, 2**40),
            _HASHES,
            st.binary(max_size=40),
            _NAME,
        )
    )
    return TargetFile(
        path,
        draw(st.integers(0, 2**62)),
        draw(_HASHES),
        hardware_ids=hw,
        release_counter=draw(st.none() | st.integers(0, 2**31)),
        ecu_ids=ecus,
        shall_match=draw(st.none() | st.dictionaries(_text(max_size=6), _JSONISH, max_size=3)),
        encrypted=enc,
        url=draw(st.none() | _text(max_size=30)),
        custom_extra=draw(_EXTRA),
        unrecognized=draw(_EXTRA),
    )


_SIGNER = PrivateKey.generate(ED25519)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(_target(), max_size=4),
    st.none() | _NAME,
    st.integers(1, 2**62),
    st.integers(0, 253402300799),
    _EXTRA,
)
def test_der_roundtrip_property_targets(targets, vehicle, version, expires, extra):
    signed = Targets(
        version=version,
        expires=datetime.fromtimestamp(expires, UTC),
        targets={t.path: t for t in targets},
        vehicle_id=vehicle,
        unrecognized=extra,
    )
    md = Metadata(signed, encoding=COMPACT_DER)
    md.sign(_SIGNER)
    data = md.to_bytes()
    back = der.decode_metadata(data, PRIMARY)
    assert back.signed.to_dict() == signed.to_dict()
    assert back.to_bytes() == data
    assert _SIGNER.key.verify(back.signatures[0].sig, back.signed_bytes)
