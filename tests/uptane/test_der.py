"""The DER profile (docs/der-profile.md): lossless round trips for every role, signatures
over the DER signed part, strict DER only, and bounded decoding of hostile input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from der_tree import dump_tree, parse_tree, tlv

from uptane.encoding import der
from uptane.errors import (
    EndlessDataAttack,
    LimitExceeded,
    MalformedInput,
    NonCanonicalEncoding,
    ThresholdNotMet,
    UptaneError,
)
from uptane.keys import ECDSA, ED25519, RSA_PSS, Key, PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.metadata import (
    COMPACT_DER,
    JSON,
    DelegatedRole,
    Delegations,
    EncryptedImage,
    Metadata,
    MetaFile,
    RoleRef,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
    decode,
)
from uptane.signatures import check_threshold

EXPIRES = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)

# hostile and non-canonical inputs are built with der_tree's tiny independent TLV tool

# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {s: PrivateKey.generate(s) for s in (ED25519, ECDSA, RSA_PSS)}


def _root(keys: dict[str, PrivateKey]) -> Root:
    root = Root(version=3, expires=EXPIRES, keys={}, roles={})
    for role in ("root", "timestamp", "snapshot", "targets"):
        root.add_key(keys[ED25519].key, role)
    root.add_key(keys[ECDSA].key, "root")
    root.add_key(keys[RSA_PSS].key, "targets")
    root.roles["root"].threshold = 2
    root.roles["root"].unrecognized = {"x-note": "two of them"}
    root.consistent_snapshot = False
    return root


def _image_targets(keys: dict[str, PrivateKey]) -> Targets:
    k1, k2 = keys[ED25519].key, keys[ECDSA].key
    tf = TargetFile.from_data(
        "brakes/fw-2.bin",
        b"\x01" * 300,
        ("sha256", "sha512"),
        hardware_ids=["brake-a", "brake-b"],
        release_counter=9,
        shall_match={"bootloader": ">=3", "flags": [1, 2, {"deep": None}]},
        custom_extra={"vendor": "ACME"},
    )
    plain = TargetFile("radio.img", 0, {"sha256": "00" * 32})
    roles = [
        DelegatedRole(
            "brakes",
            [k1.keyid],
            1,
            terminating=True,
            paths=["brakes/*"],
            hardware_ids=["brake-a"],
            unrecognized={"x-owner": "supplier A"},
        ),
        DelegatedRole("bins", [k2.keyid], 1, path_hash_prefixes=["00", "7f"]),
        DelegatedRole(
            "multi",
            [],
            1,
            paths=["radio/*"],
            multi_roles=[RoleRef("supA", [k1.keyid], 1), RoleRef("supB", [k2.keyid], 1)],
            min_roles_in_agreement=2,
        ),
        DelegatedRole("empty-paths", [k1.keyid], 1, paths=[]),
    ]
    return Targets(
        version=7,
        expires=EXPIRES,
        targets={tf.path: tf, plain.path: plain},
        delegations=Delegations({k1.keyid: k1, k2.keyid: k2}, roles, unrecognized={"x": 1}),
    )


def _succinct_targets(keys: dict[str, PrivateKey]) -> Targets:
    k = keys[ED25519].key
    return Targets(
        expires=EXPIRES,
        delegations=Delegations({k.keyid: k}, None, SuccinctRoles([k.keyid], 1, 8, "bin")),
    )


def _director_targets() -> Targets:
    enc = EncryptedImage("ecu1.enc", 320, {"sha256": "ab" * 32}, b"\x10" * 48, "aes-256-gcm")
    tf = TargetFile.from_data(
        "ecu1/fw.bin",
        b"image",
        ("sha256",),
        hardware_ids=["hw-a"],
        release_counter=4,
        ecu_ids={"ECU1": "hw-a", "ECU2": "hw-other"},
        encrypted=enc,
        url="https://director.example/images/ecu1",
        unrecognized={"x-extra": [True]},
    )
    return Targets(
        version=12,
        expires=EXPIRES,
        targets={tf.path: tf},
        vehicle_id="VIN0001",
        unrecognized={"x-campaign": "c-17"},
    )


def _timestamp() -> Timestamp:
    return Timestamp(
        version=40, expires=EXPIRES, snapshot_meta=MetaFile(5, 512, {"sha256": "cd" * 32})
    )


def _snapshot() -> Snapshot:
    return Snapshot(
        version=5,
        expires=EXPIRES,
        meta={
            "targets.json": MetaFile(7),
            "brakes.json": MetaFile(2, 100, {}),
            "bins.json": MetaFile(3, unrecognized={"x": "y"}),
        },
    )


def all_signed(keys: dict[str, PrivateKey]) -> dict[str, Any]:
    return {
        "root": _root(keys),
        "timestamp": _timestamp(),
        "snapshot": _snapshot(),
        "image-targets": _image_targets(keys),
        "succinct-targets": _succinct_targets(keys),
        "director-targets": _director_targets(),
        "director-targets-empty": Targets(expires=EXPIRES, vehicle_id="VIN0001"),
        "spec-version-other": Timestamp(spec_version="1.0.0", expires=EXPIRES),
    }


ROLES = [
    "root",
    "timestamp",
    "snapshot",
    "image-targets",
    "succinct-targets",
    "director-targets",
    "director-targets-empty",
    "spec-version-other",
]


def _signed_md(signed: Any, signer: PrivateKey, encoding: str = COMPACT_DER) -> Metadata[Any]:
    md = Metadata(signed, encoding=encoding)
    md.sign(signer)
    return md


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ROLES)
def test_5_2_der_roundtrip_every_role(keys, name):
    signed = all_signed(keys)[name]
    md = _signed_md(signed, keys[ED25519])
    data = md.to_bytes()
    back = der.decode_metadata(data, PRIMARY)
    assert back.encoding == COMPACT_DER
    assert back.signed.to_dict() == signed.to_dict()
    assert back.to_dict() == md.to_dict()
    assert back.signed_bytes == der.encode_signed(signed)
    assert back.to_bytes() == data
    # the generic entry point reaches the same decoder
    assert decode(data, PRIMARY, encoding=COMPACT_DER).signed.to_dict() == signed.to_dict()


JSON_ROLES = list(ROLES)


@pytest.mark.parametrize("name", [*JSON_ROLES, "root-ed25519"])
def test_5_2_json_roundtrip_every_role(keys, name):
    if name == "root-ed25519":
        signed = _root({ED25519: keys[ED25519], ECDSA: keys[ED25519], RSA_PSS: keys[ED25519]})
    else:
        signed = all_signed(keys)[name]
    md = _signed_md(signed, keys[ED25519], JSON)
    back = decode(md.to_bytes(), PRIMARY, encoding=JSON)
    assert back.signed.to_dict() == signed.to_dict()
    # and JSON -> model -> DER -> model keeps everything too
    again = der.decode_metadata(der.encode_metadata(back), PRIMARY)
    assert again.signed.to_dict() == signed.to_dict()


def test_5_2_1_der_signed_part_is_what_signatures_cover(keys):
    """The signature covers the DER of the signed part, which the decoder hands back as the
    exact bytes taken from the input; it verifies after decode with every scheme."""
    md = Metadata(_root(keys), encoding=COMPACT_DER)
    for signer in keys.values():
        md.sign(signer)
    data = md.to_bytes()
    back = der.decode_metadata(data, PRIMARY, role_type="root")
    assert back.signed_bytes is not None and back.signed_bytes in data
    assert data.index(back.signed_bytes) in (2, 3, 4, 5)  # right after the outer header
    root = back.signed
    check_threshold(
        back.signed_bytes, back.signatures, root.keys, list(root.keys), 3, PRIMARY, role="root"
    )
    # a JSON signature does not cover the DER payload
    json_md = _signed_md(_root(keys), keys[ED25519], JSON)
    with pytest.raises(ThresholdNotMet):
        check_threshold(
            back.signed_bytes, json_md.signatures, root.keys, list(root.keys), 1, PRIMARY
        )


def test_5_2_1_der_signature_breaks_when_signed_part_changes(keys):
    md = _signed_md(_director_targets(), keys[ED25519])
    tree = parse_tree(md.to_bytes())
    signed = tree[0][1][0][1]
    assert signed[1][0] == 0x02  # version
    signed[1][1] = b"\x0d"  # 12 -> 13
    back = der.decode_metadata(dump_tree(tree), PRIMARY)
    assert back.signed.version == 13
    key = keys[ED25519].key
    with pytest.raises(ThresholdNotMet):
        check_threshold(
            back.signed_bytes, back.signatures, {key.keyid: key}, [key.keyid], 1, PRIMARY
        )


def test_5_2_3_1_director_targets_with_no_images_carry_vehicle_id(keys):
    md = _signed_md(Targets(expires=EXPIRES, vehicle_id="VIN-42"), keys[ED25519])
    back = der.decode_metadata(md.to_bytes(), PRIMARY, role_type="targets")
    assert back.signed.targets == {}
    assert back.signed.vehicle_id == "VIN-42"


def test_5_2_3_1_director_custom_fields_survive(keys):
    back = der.decode_metadata(_signed_md(_director_targets(), keys[ED25519]).to_bytes(), PRIMARY)
    tf = back.signed.targets["ecu1/fw.bin"]
    assert tf.ecu_ids == {"ECU1": "hw-a", "ECU2": "hw-other"}
    assert tf.hardware_ids == ["hw-a"]
    assert tf.release_counter == 4
    assert tf.encrypted is not None and tf.encrypted.wrapped_key == b"\x10" * 48
    assert tf.url == "https://director.example/images/ecu1"
    assert tf.unrecognized == {"x-extra": [True]}


def test_5_2_3_2_delegations_survive_in_priority_order(keys):
    signed = _image_targets(keys)
    back = der.decode_metadata(_signed_md(signed, keys[ED25519]).to_bytes(), PRIMARY).signed
    assert [r.name for r in back.delegations.roles] == ["brakes", "bins", "multi", "empty-paths"]
    assert back.delegations.roles[0].terminating is True
    assert back.delegations.roles[0].hardware_ids == ["brake-a"]
    assert back.delegations.roles[1].path_hash_prefixes == ["00", "7f"]
    assert back.delegations.roles[2].min_roles_in_agreement == 2
    assert back.delegations.roles[3].paths == []
    assert (
        back.targets["brakes/fw-2.bin"].shall_match == signed.targets["brakes/fw-2.bin"].shall_match
    )


def test_der_keeps_unusual_values_losslessly(keys):
    """Values outside the compact forms (text key ids, upper-case hex, odd PEM, unknown hash
    algorithms) still round-trip, through the text alternatives."""
    pem = keys[ECDSA].key.public
    odd = Key("ecdsa", ECDSA, pem.replace("\n", "\r\n"))
    root = _root(keys)
    root.keys["not-hex-id"] = odd
    root.roles["snapshot"].keyids.append("not-hex-id")
    md = _signed_md(root, keys[ED25519])
    back = der.decode_metadata(md.to_bytes(), PRIMARY)
    assert back.signed.to_dict() == root.to_dict()

    tf = TargetFile("a", 1, {"sha256": "AB" * 32, "whirlpool": "00" * 64, "sha512": "0f"})
    t = Targets(expires=EXPIRES, targets={"a": tf})
    back = der.decode_metadata(_signed_md(t, keys[ED25519]).to_bytes(), PRIMARY)
    assert back.signed.to_dict() == t.to_dict()


def test_der_director_targets_much_smaller_than_json(keys):
    """Sizes are deterministic (not timings): DER of one-image Director targets is well under
    half its JSON. The benchmark measures the exact ratio."""
    tf = TargetFile.from_data(
        "fw.bin",
        b"x" * 100,
        ("sha256",),
        hardware_ids=["hw-a"],
        release_counter=1,
        ecu_ids={"ECU-0001": "hw-a"},
    )
    signed = Targets(expires=EXPIRES, targets={"fw.bin": tf}, vehicle_id="VIN0001")
    der_size = len(_signed_md(signed, keys[ED25519], COMPACT_DER).to_bytes())
    json_size = len(_signed_md(signed, keys[ED25519], JSON).to_bytes())
    assert der_size <= 0.45 * json_size


def test_der_encoder_refuses_models_it_cannot_carry(keys):
    root = _root(keys)
    bad = Key("ed25519", ED25519, "00" * 32, {"keyval": {"private": "x"}})
    root.keys["k"] = bad
    with pytest.raises(MalformedInput):
        der.encode_signed(root)
    with pytest.raises(MalformedInput):
        der.encode_signed(Timestamp(expires=EXPIRES, version="7"))  # type: ignore[arg-type]


# --- strictness -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root_der(keys) -> bytes:
    return _signed_md(_root(keys), keys[ED25519]).to_bytes()


@pytest.fixture(scope="module")
def targets_der(keys) -> bytes:
    t = _image_targets(keys)
    return _signed_md(t, keys[ED25519]).to_bytes()


def test_der_refuses_trailing_bytes(root_der):
    with pytest.raises(MalformedInput, match="trailing"):
        der.decode_metadata(root_der + b"\x00", PRIMARY)
    with pytest.raises(MalformedInput, match="trailing"):
        der.decode_metadata(root_der + b"\x30\x00", PRIMARY)


def test_der_refuses_ber_indefinite_length(root_der):
    tree = parse_tree(root_der)
    inner = dump_tree(tree[0][1])
    with pytest.raises(NonCanonicalEncoding, match="indefinite"):
        der.decode_metadata(b"\x30\x80" + inner + b"\x00\x00", PRIMARY)


def test_der_refuses_non_minimal_lengths(root_der):
    tree = parse_tree(root_der)
    inner = dump_tree(tree[0][1])
    padded = b"\x30\x83" + len(inner).to_bytes(3, "big") + inner  # leading zero byte
    with pytest.raises(NonCanonicalEncoding):
        der.decode_metadata(padded, PRIMARY)
    # a long form where the short form fits: rebuild a small timestamp by hand
    ts = _signed_md(_timestamp(), PrivateKey.generate()).to_bytes()
    t2 = parse_tree(ts)
    sig_seq = dump_tree(t2[0][1][1][1])
    rebuilt = dump_tree([t2[0][1][0]]) + b"\x30\x81" + bytes([len(sig_seq)]) + sig_seq
    assert len(sig_seq) < 0x80
    with pytest.raises(NonCanonicalEncoding, match="short form"):
        der.decode_metadata(tlv(0x30, rebuilt), PRIMARY)


def test_der_refuses_wrong_tags(root_der):
    with pytest.raises(MalformedInput):
        der.decode_metadata(b"\x31" + root_der[1:], PRIMARY)
    tree = parse_tree(root_der)
    tree[0][1][0][1][0][0] = 0x04  # expires INTEGER -> OCTET STRING
    with pytest.raises(MalformedInput):
        der.decode_metadata(dump_tree(tree), PRIMARY)
    tree = parse_tree(root_der)
    tree[0][1][0][1][2][0] = 0xA7  # an unknown body alternative
    with pytest.raises(MalformedInput):
        der.decode_metadata(dump_tree(tree), PRIMARY)


def test_der_refuses_non_der_values(root_der):
    """BER-valid but non-DER values: BOOLEAN true not 0xFF, padded INTEGER, a DEFAULT value
    spelled out, an extra unknown field."""
    tree = parse_tree(root_der)
    body = tree[0][1][0][1][2][1]  # RootMetadata children
    assert body[0] == [0x01, b"\x00"]  # consistentSnapshot FALSE
    body[0][1] = b"\x01"  # TRUE, but not 0xFF
    with pytest.raises(NonCanonicalEncoding):
        der.decode_metadata(dump_tree(tree), PRIMARY)

    tree = parse_tree(root_der)
    version = tree[0][1][0][1][1]
    assert version == [0x02, b"\x03"]
    version[1] = b"\x00\x03"
    with pytest.raises(NonCanonicalEncoding):
        der.decode_metadata(dump_tree(tree), PRIMARY)

    tree = parse_tree(root_der)
    tree[0][1][0][1].insert(2, [0x0C, der.DEFAULT_SPEC_VERSION.encode()])
    with pytest.raises(NonCanonicalEncoding):
        der.decode_metadata(dump_tree(tree), PRIMARY)

    tree = parse_tree(root_der)
    tree[0][1].append([0x80, b"\x00"])  # an unknown trailing field in the envelope
    with pytest.raises(MalformedInput):
        der.decode_metadata(dump_tree(tree), PRIMARY)


def test_der_refuses_non_canonical_orders_and_forms(keys):
    """Maps must be sorted, compact alternatives used where they apply."""
    k = keys[ED25519]
    t = Targets(
        expires=EXPIRES,
        targets={p: TargetFile(p, 1, {"sha256": "00" * 32}) for p in ("a", "b")},
    )
    data = _signed_md(t, k).to_bytes()
    tree = parse_tree(data)
    tlist = tree[0][1][0][1][2][1][0][1]
    tlist.reverse()
    with pytest.raises(NonCanonicalEncoding):
        der.decode_metadata(dump_tree(tree), PRIMARY)

    # duplicate target path
    tree = parse_tree(data)
    tlist = tree[0][1][0][1][2][1][0][1]
    tlist[1] = tlist[0]
    with pytest.raises(MalformedInput):
        der.decode_metadata(dump_tree(tree), PRIMARY)

    # a key id written as text although it is lowercase hex
    tree = parse_tree(data)
    sig = tree[0][1][1][1][0][1]
    assert sig[0][0] == 0x04
    sig[0] = [0x0C, sig[0][1].hex().encode()]
    with pytest.raises(NonCanonicalEncoding):
        der.decode_metadata(dump_tree(tree), PRIMARY)


def test_der_refuses_embedded_json_that_is_not_canonical(keys):
    t = Targets(expires=EXPIRES, unrecognized={"b": 1, "a": 2})
    data = _signed_md(t, keys[ED25519]).to_bytes()
    tree = parse_tree(data)
    signed = tree[0][1][0][1]
    assert signed[-1][0] == 0x80 | der.UNRECOGNIZED_TAG
    assert signed[-1][1] == b'{"a":2,"b":1}'
    for blob, err in [
        (b'{"b":1,"a":2}', NonCanonicalEncoding),
        (b'{"a": 2, "b": 1}', NonCanonicalEncoding),
        (b"{}", NonCanonicalEncoding),
        (b"[1]", MalformedInput),
        (b"{", MalformedInput),
        (b'{"version": 9}', NonCanonicalEncoding),  # shadows a known field
    ]:
        signed[-1][1] = blob
        with pytest.raises(err):
            der.decode_metadata(dump_tree(tree), PRIMARY)


def test_der_role_type_is_pinned(root_der):
    with pytest.raises(MalformedInput):
        der.decode_metadata(root_der, PRIMARY, role_type="timestamp")


# --- bounds -----------------------------------------------------------------------------------


def test_der_byte_cap_is_checked_first(root_der):
    with pytest.raises(EndlessDataAttack):
        der.decode_metadata(root_der, PRIMARY, cap=len(root_der) - 1)
    with pytest.raises(EndlessDataAttack):
        der.decode_metadata(
            b"\x00" * (CONSTRAINED.bytes_for_role("timestamp") + 1),
            CONSTRAINED,
            role_type="timestamp",
        )
    assert der.decode_metadata(root_der, PRIMARY, cap=len(root_der)).type == "root"


def test_der_deep_nesting_is_refused_without_recursion():
    data = b""
    for _ in range(5000):
        data = tlv(0x30, data)
    with pytest.raises(LimitExceeded, match="nesting"):
        der.decode_metadata(data, PRIMARY)
    with pytest.raises(LimitExceeded):
        der.check_structure(data, CONSTRAINED, len(data))
    # indefinite-length nesting is refused as BER before any depth is reached
    with pytest.raises(NonCanonicalEncoding):
        der.decode_metadata(b"\x30\x80" * 5000, PRIMARY)


def test_der_huge_declared_lengths_are_endless_data():
    with pytest.raises(EndlessDataAttack):
        der.decode_metadata(b"\x30\x84\x7f\xff\xff\xff" + b"\x00" * 10, PRIMARY)
    with pytest.raises(EndlessDataAttack):
        der.decode_metadata(b"\x30\x88\x01\x00\x00\x00\x00\x00\x00\x00", PRIMARY)
    inner = b"\x04\x84\x00\x10\x00\x00"  # leading zero: BER, not DER
    with pytest.raises(NonCanonicalEncoding):
        der.decode_metadata(tlv(0x30, inner), PRIMARY)
    # a length that runs past the data (but within the cap) is truncation
    with pytest.raises(MalformedInput, match="past"):
        der.decode_metadata(b"\x30\x10\x02\x01\x01", PRIMARY)


def test_der_too_many_elements_are_refused_before_parsing():
    many = tlv(0x30, b"\x05\x00" * 100)
    with pytest.raises(LimitExceeded):
        der.decode_metadata(tlv(0x30, many), CONSTRAINED)


def test_der_caps_of_the_model_apply(keys):
    k = keys[ED25519]
    t = Targets(
        expires=EXPIRES,
        targets={f"t{i:03}": TargetFile(f"t{i:03}", 1, {"sha256": "00" * 32}) for i in range(33)},
    )
    data = _signed_md(t, k).to_bytes()
    assert der.decode_metadata(data, PRIMARY).signed.to_dict() == t.to_dict()
    with pytest.raises(LimitExceeded):
        der.decode_metadata(data, CONSTRAINED.replace(role_bytes={"targets": 1 << 20}))

    long_name = "p" * (PRIMARY.max_string + 1)
    t = Targets(expires=EXPIRES, targets={long_name: TargetFile(long_name, 1, {"sha256": "00"})})
    with pytest.raises(LimitExceeded):
        der.decode_metadata(_signed_md(t, k).to_bytes(), PRIMARY)

    deep: Any = 1
    for _ in range(PRIMARY.max_depth + 2):
        deep = [deep]
    t = Targets(expires=EXPIRES, unrecognized={"deep": deep})
    with pytest.raises(LimitExceeded):
        der.decode_metadata(_signed_md(t, k).to_bytes(), PRIMARY)


def test_der_integer_and_time_ranges(keys):
    data = _signed_md(_timestamp(), keys[ED25519]).to_bytes()
    tree = parse_tree(data)
    tree[0][1][0][1][1][1] = b"\x01" + b"\x00" * 40  # a 41-byte version
    with pytest.raises(LimitExceeded):
        der.decode_metadata(dump_tree(tree), PRIMARY)
    tree = parse_tree(data)
    tree[0][1][0][1][0][1] = (10**13).to_bytes(6, "big")  # expires past year 9999
    with pytest.raises(MalformedInput):
        der.decode_metadata(dump_tree(tree), PRIMARY)
    tree = parse_tree(data)
    tree[0][1][0][1][1][1] = b"\x00"  # version 0
    with pytest.raises(MalformedInput):
        der.decode_metadata(dump_tree(tree), PRIMARY)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30",
        b"\x30\x00",
        b"\x30\x02\x30\x00",
        b"\x1f\x01\x00",
        b"\x30\x01\xff",
        b"\x02\x01\x01",
    ],
)
def test_der_garbage_raises_only_uptane_errors(data):
    with pytest.raises(UptaneError):
        der.decode_metadata(data, PRIMARY)


def test_der_embedded_json_keeps_control_characters(keys):
    t = Targets(expires=EXPIRES, unrecognized={"note": "line1\nline2\t\r", "q": '"\\'})
    back = der.decode_metadata(_signed_md(t, keys[ED25519]).to_bytes(), PRIMARY)
    assert back.signed.to_dict() == t.to_dict()
    # NUL is refused in every string of a document (uptane/policy.py, issue 15)
    t.unrecognized["note"] += "\x00"
    with pytest.raises(MalformedInput, match="U\\+0000"):
        der.decode_metadata(_signed_md(t, keys[ED25519]).to_bytes(), PRIMARY)


def test_der_every_string_is_capped_as_in_json(keys):
    """Strings the model does not check itself (here a root role name) still meet
    ``max_string``, as the JSON decoder's generic walk enforces."""
    root = _root(keys)
    root.roles["r" * (CONSTRAINED.max_string + 1)] = root.roles["root"]
    data = _signed_md(root, keys[ED25519]).to_bytes()
    assert der.decode_metadata(data, PRIMARY).signed.to_dict() == root.to_dict()
    with pytest.raises(LimitExceeded):
        der.decode_metadata(data, CONSTRAINED.replace(role_bytes={"root": 1 << 20}))


def test_der_reader_refuses_missing_misplaced_and_malformed_fields(root_der):
    """The TLV reader (no asn1crypto parse tree): a required field left out, two fields
    swapped, primitive contents no DER value has."""
    tree = parse_tree(root_der)
    del tree[0][1][0][1][1]  # version
    with pytest.raises(MalformedInput, match="version"):
        der.decode_metadata(dump_tree(tree), PRIMARY)
    tree = parse_tree(root_der)
    signed = tree[0][1][0][1]
    signed[1], signed[2] = signed[2], signed[1]  # the body before the version
    with pytest.raises(MalformedInput):
        der.decode_metadata(dump_tree(tree), PRIMARY)
    for pick, content, err in [
        (lambda t: t[0][1][0][1][2][1][0], b"\xff\xff", MalformedInput),  # 2-byte BOOLEAN
        (lambda t: t[0][1][0][1][1], b"", MalformedInput),  # an empty INTEGER
        (lambda t: t[0][1][0][1][1], b"\x01" * 10, LimitExceeded),  # past 64 bits
    ]:
        tree = parse_tree(root_der)
        node = pick(tree)
        assert node[0] in (0x01, 0x02)
        node[1] = content
        with pytest.raises(err):
            der.decode_metadata(dump_tree(tree), PRIMARY)
    tree = parse_tree(root_der)
    keytype = tree[0][1][0][1][2][1][1][1][0][1][1]  # the first key's keytype
    assert keytype[0] == 0x0C
    keytype[1] = b"\xff\xfe"
    with pytest.raises(MalformedInput, match="UTF-8"):
        der.decode_metadata(dump_tree(tree), PRIMARY)


def test_der_every_accepted_mutation_is_the_encoding_of_what_was_decoded():
    """The re-encoding check compares piece by piece: whatever one-byte change it lets
    through must be the one DER encoding of the decoded value."""
    data = _signed_md(_timestamp(), PrivateKey.generate()).to_bytes()
    accepted = 0
    for i in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= flip
            try:
                md = der.decode_metadata(bytes(bad), PRIMARY)
            except UptaneError:
                continue
            accepted += 1
            assert der.encode_metadata(md) == bytes(bad)
    assert accepted  # flips inside digests and signatures are values, not forms
