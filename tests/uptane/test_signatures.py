"""Thresholds count unique keys (§5.4.4.3 ff.; Standard 1.2.0 'unique' wording)."""

from __future__ import annotations

import pytest

from uptane.errors import BadSignature, ThresholdNotMet
from uptane.keys import ECDSA, Key, PrivateKey
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
