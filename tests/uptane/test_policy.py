"""The integer and string policy (uptane/policy.py, docs/core.md): one rule for versions,
counters, lengths and thresholds, for strings and for target names, applied by every
decoder. Each finding of issue 15 has a test here that failed on the code before the
policy (validly signed documents that were accepted) and passes now."""

from __future__ import annotations

import contextlib
import copy
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from trust_support import NOW, make_repo

from uptane.codec import codec_for
from uptane.encoding import cbor, der
from uptane.encoding.json import loads
from uptane.errors import MalformedInput, UptaneError
from uptane.keys import ED25519, PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    build_vehicle_manifest,
    decode_report,
    decode_vehicle_manifest,
)
from uptane.metadata import COMPACT_DER, DER, JSON, Metadata, TargetFile, Targets
from uptane.paths import check_target_path
from uptane.policy import (
    MAX_UINT,
    check_document_string,
    check_hex,
    check_target_name,
    check_text,
    check_uint,
)

ENCODINGS = [JSON, DER, COMPACT_DER]
EXPIRES = datetime(2031, 1, 1, tzinfo=UTC)
KEY = PrivateKey.generate(ED25519)


@contextlib.contextmanager
def old_der_integers() -> Iterator[None]:
    """The DER profile as it was before the policy (INTEGERs of up to 9 bytes, about
    2**71): how a signer with the old code, or an attacker, wrote what is refused now."""
    saved = der.MAX_INTEGER_BYTES
    der.MAX_INTEGER_BYTES = 9
    try:
        yield
    finally:
        der.MAX_INTEGER_BYTES = saved


def signed_targets(encoding: str, targets: Targets) -> bytes:
    md: Metadata[Targets] = Metadata(targets, encoding=encoding)
    with old_der_integers():
        md.sign(KEY)
        return md.to_bytes()


def report(**kw: Any) -> EcuVersionReport:
    installed = kw.pop("installed", InstalledImage("fw/a.bin", 3, {"sha256": "ab" * 32}))
    fields: dict[str, Any] = {"nonce": b"\x01" * 16, **kw}
    if "counter" in kw:
        fields.pop("nonce")
    return EcuVersionReport("ECU-1", installed, NOW, **fields)


def signed_report(encoding: str, body: EcuVersionReport) -> bytes:
    s = SignedManifest(body, encoding=encoding)
    with old_der_integers():
        s.sign(KEY)
        return s.to_bytes()


# --- the rules, one by one --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0, True), (MAX_UINT, True), (MAX_UINT + 1, False), (-1, False), (10**300, False)],
)
def test_integers_are_in_0_to_2_63_minus_1(value: int, ok: bool) -> None:
    if ok:
        assert check_uint(value, "x") == value
    else:
        with pytest.raises(MalformedInput, match=r"outside 0\.\.2\*\*63-1"):
            check_uint(value, "x")


def test_integer_rule_refuses_bools_and_non_ints_and_honours_tighter_bounds() -> None:
    for bad in (True, 1.0, "1", None):
        with pytest.raises(MalformedInput, match="expected an integer"):
            check_uint(bad, "x")  # type: ignore[arg-type]
    with pytest.raises(MalformedInput, match=r"outside 1\.\.32"):
        check_uint(0, "bit_length", low=1, high=32)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "a/../x",
        "a/./x",
        ".",
        "..",
        "/etc/passwd",
        "\\windows",
        "a\\b",
        "a//b",
        "a/",
        "fw\x00.bin",
        "fw\n.bin",
        "fw\x7f.bin",
        "fw\x85.bin",
        "fw\u202egpj.exe",  # right-to-left override
        "fw\u2066x\u2069.bin",  # an isolate
        "fw\u200f.bin",
        unicodedata.normalize("NFD", "brakes/é.bin"),  # not NFC
        "\ud800.bin",
    ],
)
def test_unsafe_target_names_are_refused(name: str) -> None:
    with pytest.raises(MalformedInput, match="target"):
        check_target_name(name)
    with pytest.raises(MalformedInput):  # the old entry point applies the same rule
        check_target_path(name)


@pytest.mark.parametrize(
    "name", ["fw.bin", "brakes/fw-2.0.bin", "a/b/c", "..x/y..", "ünïcödé/ファーム.bin", "x y.bin"]
)
def test_safe_target_names_pass(name: str) -> None:
    assert check_target_name(name) == name


@pytest.mark.parametrize("digest", ["ab cd", " abcd", "abcd ", "abc", "0xab", "ab\ncd", "gg"])
def test_hex_must_be_exact(digest: str) -> None:
    with pytest.raises(MalformedInput, match="not exact hex"):
        check_hex(digest, "hash")


def test_hex_of_either_case_passes() -> None:
    assert check_hex("aBcD", "hash") == b"\xab\xcd"


def test_strings_of_a_document_and_text_fields() -> None:
    check_document_string("PEM\nlines\r\n\tand tabs")
    for bad in ("nul\x00", "bell\x07", "del\x7f", "c1\x9b", "\udfff"):
        with pytest.raises(MalformedInput):
            check_document_string(bad)
    for bad in ("line\nbreak", "tab\t", "nul\x00"):
        with pytest.raises(MalformedInput, match="control character"):
            check_text(bad, "attack indicator")


# --- the decoders apply it ----------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        b'{"v":9223372036854775808}',
        b'{"v":-9223372036854775809}',
        b'{"v":[1,' + b"1" * 301 + b"]}",
        b'{"s":"a\\u0000b"}',
        b'{"s\\u0001":1}',
        b'{"s":"\\ud800"}',
        b'["\x01"]',
        '["\u0085"]'.encode(),
    ],
)
def test_json_decoder_refuses_what_the_policy_refuses_anywhere(doc: bytes) -> None:
    with pytest.raises(MalformedInput):
        loads(doc, PRIMARY)


def test_json_decoder_keeps_int64_and_pem_newlines() -> None:
    doc = (
        b'{"a":9223372036854775807,"b":-9223372036854775808,'
        b'"pem":"x\\ny","h":"1234567890123456789012"}'
    )
    assert loads(doc, PRIMARY)["a"] == 2**63 - 1


def test_der_integers_are_at_most_8_bytes() -> None:
    targets = Targets(version=2**63, expires=EXPIRES)
    with old_der_integers():  # 9 bytes: the old profile
        data = codec_for(COMPACT_DER).encode_metadata(_signed(targets, COMPACT_DER))
    with pytest.raises(MalformedInput, match=r"(?i)integer"):
        codec_for(COMPACT_DER).decode_metadata(data, PRIMARY)
    with pytest.raises(MalformedInput):  # nor will the encoder write one now
        _signed(targets, COMPACT_DER)


def _signed(targets: Targets, encoding: str) -> Metadata[Targets]:
    md: Metadata[Targets] = Metadata(copy.deepcopy(targets), encoding=encoding)
    md.sign(KEY)
    return md


@pytest.mark.parametrize(
    "value", [2**63, -(2**63) - 1, "nul\x00", "esc\x1b", "c1\u0085", {"k\x00": 1}]
)
def test_cbor_decoder_refuses_what_the_policy_refuses(value: Any) -> None:
    # written past the encoder (which refuses the same values) as canonical CBOR
    import cbor2

    data = cbor2.dumps(value, canonical=True)
    with pytest.raises(MalformedInput):
        cbor.loads(data, PRIMARY)
    with pytest.raises(MalformedInput):
        cbor.dumps(value) if isinstance(value, int) else _raise()


def _raise() -> None:
    raise MalformedInput("text is refused at decode")


# --- issue 15's findings, each validly signed ---------------------------------------------


def test_issue_15_signed_timestamp_version_10_300_is_not_trusted() -> None:
    """Found: a timestamp of version 10**300 signed by the timestamp key was trusted."""
    repo = make_repo()
    trust = repo.trust()
    ts = repo.current("timestamp")
    ts.version = 10**300
    data = repo.sign(ts, *repo.keys["timestamp"])
    with pytest.raises(MalformedInput, match=r"int64|version"):
        trust.update_timestamp(data, NOW + timedelta(hours=1))
    assert trust.timestamp is None or trust.timestamp.signed.version < 2**63


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_issue_15_signed_targets_version_2_72_is_refused_in_every_encoding(encoding: str) -> None:
    """Found: a JSON targets of version 2**72 verified at the Primary but could not be
    forwarded as DER. Now no decoder takes it (DER written with the old 9-byte profile
    stops at 2**71, so 2**63 stands in for it there)."""
    version = 2**72 if encoding == JSON else 2**63
    data = signed_targets(encoding, Targets(version=version, expires=EXPIRES))
    with pytest.raises(MalformedInput):
        codec_for(encoding).decode_metadata(data, PRIMARY, role_type="targets")


UNSAFE_NAMES = {
    "dotdot": "../x",
    "empty": "",
    "rtl-override": "fw/\u202egpj.exe",
    "not-nfc": unicodedata.normalize("NFD", "fw/é.bin"),
    "leading-slash": "/x",
    "backslash": "..\\x",
}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("name", sorted(UNSAFE_NAMES))
def test_issue_15_signed_unsafe_target_names_are_refused(encoding: str, name: str) -> None:
    """Found: ``../x``, an empty name, a right-to-left override and a name not in NFC
    passed the core when signed (the Primary's target URL could leave its directory)."""
    t = Targets(expires=EXPIRES)
    t.targets[UNSAFE_NAMES[name]] = TargetFile.from_data(UNSAFE_NAMES[name], b"x")
    if encoding == DER and not UNSAFE_NAMES[name].isascii():
        # the standard DER writes names as VisibleStrings: these cannot even be signed
        with pytest.raises(MalformedInput, match="VisibleString"):
            signed_targets(encoding, t)
        return
    with pytest.raises(MalformedInput, match=r"target|name"):
        codec_for(encoding).decode_metadata(signed_targets(encoding, t), PRIMARY)


@pytest.mark.parametrize("encoding", [JSON])
@pytest.mark.parametrize("digest", ["ab " * 32, " " + "ab" * 32, "AB cd" + "ab" * 30])
def test_issue_15_hex_digests_with_spaces_are_refused(encoding: str, digest: str) -> None:
    """Found: ``bytes.fromhex`` skips spaces, so a digest with spaces was accepted (DER
    holds digests as bytes: there is no text to hold a space)."""
    t = Targets(expires=EXPIRES)
    t.targets["fw.bin"] = TargetFile("fw.bin", 1, {"sha256": digest})
    with pytest.raises(MalformedInput, match="not exact hex"):
        codec_for(encoding).decode_metadata(signed_targets(encoding, t), PRIMARY)
    body = report(installed=InstalledImage("fw.bin", 1, {"sha256": digest}))
    with pytest.raises(MalformedInput, match="not exact hex"):
        decode_report(signed_report(encoding, body), PRIMARY, encoding)


BAD_REPORTS: dict[str, dict[str, Any]] = {
    "counter-2**63": {"counter": 2**63},
    "length-2**63": {"installed": InstalledImage("fw/a.bin", 2**63, {"sha256": "ab" * 32})},
    "release-counter-2**63": {"release_counter": 2**63},
    "attack-with-nul": {"attack": "rollback: \x00 here"},
    "installed-name-traversal": {"installed": InstalledImage("../../x", 3, {"sha256": "ab"})},
}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("case", sorted(BAD_REPORTS))
def test_issue_15_signed_report_out_of_policy_is_malformed(encoding: str, case: str) -> None:
    """Found: a validly signed report with counter or length >= 2**63, or NUL in its
    attack indicator, decoded (and then broke the Director's database). The DER of an
    indicator is a VisibleString, which never held NUL; the DER integers above 2**63 were
    accepted up to 2**71."""
    try:
        data = signed_report(encoding, report(**BAD_REPORTS[case]))
    except MalformedInput:
        assert encoding != JSON and "attack" in case  # VisibleString: not even writable
        return
    with pytest.raises(MalformedInput):
        decode_report(data, PRIMARY, encoding)
    # and inside a vehicle manifest signed by its Primary: the manifest is refused whole
    inner = SignedManifest(report(**BAD_REPORTS[case]), encoding=encoding)
    with old_der_integers():
        inner.sign(KEY)
        vvm = build_vehicle_manifest("VIN1", "ECU-1", [inner], KEY, encoding=encoding)
        raw = vvm.to_bytes(encoding)
    with pytest.raises(MalformedInput):
        decode_vehicle_manifest(raw, PRIMARY, encoding)


@pytest.mark.parametrize("limits", [PRIMARY, CONSTRAINED], ids=["primary", "constrained"])
def test_der_targets_walk_of_a_partial_secondary_applies_the_name_rule(limits: Any) -> None:
    """A partial-verification Secondary reads Director targets one entry at a time
    (Codec.read_targets): an unsafe name there is refused too."""
    t = Targets(expires=EXPIRES, vehicle_id="VIN1")
    tf = TargetFile.from_data("../escape.bin", b"x", ecu_ids={"ECU-1": "hw"})
    t.targets[tf.path] = tf
    for encoding in (DER, COMPACT_DER):
        data = signed_targets(encoding, t)
        with pytest.raises(UptaneError):
            reader = codec_for(encoding).read_targets(data, limits, "ECU-1")
            reader.mine()
