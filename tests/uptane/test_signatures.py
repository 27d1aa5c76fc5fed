"""Thresholds count unique keys (§5.4.4.3 ff.; Standard 1.2.0 'unique' wording)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from uptane.errors import BadSignature, ThresholdNotMet
from uptane.keys import ECDSA, ED25519, RSA_PSS, Key, PrivateKey
from uptane.limits import PRIMARY
from uptane.metadata import Signature
from uptane.signatures import check_single, check_threshold, count_valid

PAYLOAD = b"signed bytes"


def test_5_4_4_3_threshold_counts_unique_keys_not_signatures():
    k = PrivateKey.generate()
    sig = Signature(k.keyid, k.sign(PAYLOAD))
    keys = {k.keyid: k.key}
    with pytest.raises(ThresholdNotMet):
        check_threshold(PAYLOAD, [sig, sig, sig], keys, [k.keyid], 2, PRIMARY)
    check_threshold(PAYLOAD, [sig, sig], keys, [k.keyid], 1, PRIMARY)


def test_5_4_4_3_one_key_listed_under_two_keyids_counts_once():
    k = PrivateKey.generate(ECDSA)
    alias = Key("ecdsa-sha2-nistp256", ECDSA, k.key.public)  # same key, other keyid
    keys = {k.keyid: k.key, alias.keyid: alias}
    assert alias.keyid != k.keyid
    sigs = [Signature(k.keyid, k.sign(PAYLOAD)), Signature(alias.keyid, k.sign(PAYLOAD))]
    assert count_valid(PAYLOAD, sigs, keys, keys) == 1
    with pytest.raises(ThresholdNotMet):
        check_threshold(PAYLOAD, sigs, keys, list(keys), 2, PRIMARY)


def test_5_4_4_3_untrusted_and_invalid_signatures_do_not_count():
    good, other = PrivateKey.generate(), PrivateKey.generate()
    keys = {good.keyid: good.key, other.keyid: other.key}
    sigs = [
        Signature(other.keyid, other.sign(PAYLOAD)),  # key known but not allowed for the role
        Signature(good.keyid, b"\x00" * 64),  # allowed key, bad signature
    ]
    assert count_valid(PAYLOAD, sigs, keys, [good.keyid]) == 0
    sigs.append(Signature(good.keyid, good.sign(PAYLOAD)))
    # the first signature under a keyid is the one judged; a later repeat is ignored
    assert count_valid(PAYLOAD, sigs, keys, [good.keyid]) == 0
    assert count_valid(PAYLOAD, sigs[2:], keys, [good.keyid]) == 1


def test_two_distinct_keys_meet_threshold_two():
    a, b = PrivateKey.generate(), PrivateKey.generate()
    keys = {a.keyid: a.key, b.keyid: b.key}
    sigs = [Signature(a.keyid, a.sign(PAYLOAD)), Signature(b.keyid, b.sign(PAYLOAD))]
    check_threshold(PAYLOAD, sigs, keys, list(keys), 2, PRIMARY)


def test_single_signature_check():
    k = PrivateKey.generate()
    check_single(PAYLOAD, [Signature(k.keyid, k.sign(PAYLOAD))], k.key, "report")
    with pytest.raises(BadSignature):
        check_single(b"other", [Signature(k.keyid, k.sign(PAYLOAD))], k.key, "report")


@pytest.mark.parametrize("scheme", [ED25519, ECDSA, RSA_PSS])
def test_a_signed_part_checked_in_place_verifies_with_every_scheme(scheme: str) -> None:
    # a Secondary checks DER targets over a view into the file (uptane/partial.py), not a
    # copy; RSA's verify is declared for bytes only, so Key.verify hands it bytes
    k = PrivateKey.generate(scheme)
    whole = b"header" + PAYLOAD + b"trailer"
    view = memoryview(whole)[6 : 6 + len(PAYLOAD)]
    sigs = [Signature(k.keyid, k.sign(PAYLOAD))]
    assert k.key.verify(sigs[0].sig, view)
    check_threshold(view, sigs, {k.keyid: k.key}, [k.keyid], 1, PRIMARY)
    check_single(view, sigs, k.key, "report")
    with pytest.raises(ThresholdNotMet):
        check_threshold(memoryview(whole)[5:-7], sigs, {k.keyid: k.key}, [k.keyid], 1, PRIMARY)


# --- DER key-id hints (docs/der-profile.md, "Signature") ---------------------------------


def test_5_4_4_3_standard_der_signature_names_the_whole_key_id_and_its_method():
    from uptane.metadata import DER, Metadata, Targets, decode

    for k in (PrivateKey.generate(), PrivateKey.generate(ECDSA), PrivateKey.generate(RSA_PSS)):
        md = Metadata(
            Targets(version=1, expires=datetime(2030, 1, 1, tzinfo=UTC), targets={}), encoding=DER
        )
        sig = md.sign(k)
        assert sig.keyid == k.keyid and sig.unrecognized == {"method": k.key.scheme}
        back = decode(md.to_bytes(), PRIMARY, encoding=DER, role_type="targets")
        assert back.signatures == [sig]
        # POUF 1: the signature is over the SHA-256 of the signed part's DER
        assert back.signed_bytes == md.signed_bytes and len(back.signed_bytes) == 32
        check_threshold(back.signed_bytes, back.signatures, {k.keyid: k.key}, [k.keyid], 1, PRIMARY)


def test_5_4_4_3_der_signature_names_an_8_byte_key_id_hint():
    from uptane.metadata import COMPACT_DER as DER  # the hint is compact-der's
    from uptane.metadata import JSON, KEYID_HINT_HEX, Metadata, Targets, decode

    k = PrivateKey.generate()
    md = Metadata(
        Targets(version=1, expires=datetime(2030, 1, 1, tzinfo=UTC), targets={}), encoding=DER
    )
    sig = md.sign(k)
    assert sig.keyid == k.keyid[:KEYID_HINT_HEX]
    back = decode(md.to_bytes(), PRIMARY, encoding=DER, role_type="targets")
    assert back.signatures[0].keyid == k.keyid[:KEYID_HINT_HEX]
    check_threshold(back.signed_bytes, back.signatures, {k.keyid: k.key}, [k.keyid], 1, PRIMARY)
    md.encoding = JSON
    assert md.sign(k).keyid == k.keyid  # JSON keeps the whole id (TUF, python-tuf)


def test_5_4_4_3_key_id_hint_only_reaches_keys_the_role_authorizes():
    good, other = PrivateKey.generate(), PrivateKey.generate()
    keys = {good.keyid: good.key, other.keyid: other.key}
    hint = other.keyid[:16]
    sigs = [Signature(hint, other.sign(PAYLOAD))]
    assert count_valid(PAYLOAD, sigs, keys, [good.keyid]) == 0
    assert count_valid(PAYLOAD, sigs, keys, [good.keyid, other.keyid]) == 1
    # a hint that is not a prefix of any authorized id, or of the wrong length, is nothing
    assert (
        count_valid(PAYLOAD, [Signature(hint[:15], other.sign(PAYLOAD))], keys, [other.keyid]) == 0
    )
    assert (
        count_valid(PAYLOAD, [Signature(good.keyid[:16], other.sign(PAYLOAD))], keys, list(keys))
        == 0
    )


def test_5_4_4_3_key_id_hint_and_whole_id_of_one_key_count_once():
    k = PrivateKey.generate()
    keys = {k.keyid: k.key}
    sigs = [Signature(k.keyid, k.sign(PAYLOAD)), Signature(k.keyid[:16], k.sign(PAYLOAD))]
    assert count_valid(PAYLOAD, sigs, keys, [k.keyid]) == 1
    with pytest.raises(ThresholdNotMet):
        check_threshold(PAYLOAD, sigs, keys, [k.keyid], 2, PRIMARY)


def test_5_4_4_3_authorized_ids_sharing_a_hint_are_each_tried():
    a, b = PrivateKey.generate(), PrivateKey.generate()
    # two authorized ids with one prefix (ids are names here; the key bytes differ)
    ida, idb = "ab" * 8 + "0" * 48, "ab" * 8 + "1" * 48
    keys = {ida: a.key, idb: b.key}
    assert count_valid(PAYLOAD, [Signature("ab" * 8, b.sign(PAYLOAD))], keys, [ida, idb]) == 1


def test_single_signature_check_accepts_the_der_hint():
    k = PrivateKey.generate()
    check_single(PAYLOAD, [Signature(k.keyid[:16], k.sign(PAYLOAD))], k.key, "report")
    other = PrivateKey.generate()
    with pytest.raises(BadSignature):
        check_single(PAYLOAD, [Signature(other.keyid[:16], k.sign(PAYLOAD))], k.key, "report")
