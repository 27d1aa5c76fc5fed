"""Bounded fuzzing of every decoder of untrusted bytes (issue 7), in CI.

This file is the one list of the stack's decoders: :data:`EVERY_DECODER` names them and
must equal the registry in ``fuzz/targets.py``, which the atheris harnesses (``make
fuzz``) run for 10^6 inputs each. Each decoder gets random bytes and mutations of valid
encodings (bit flips, interesting bytes, cuts, insertions, duplicated spans, spliced
seeds); any exception other than :class:`uptane.errors.UptaneError` fails (for the
stream and endpoint targets, any exception at all).

Some decoders have deeper, structure-aware fuzz tests next to their module; this run adds
the mutation fuzzing each was missing and is the single place that lists all of them:

- JSON metadata, map file, trust updates: ``tests/uptane/test_fuzz_json.py``
- DER metadata: ``tests/uptane/test_fuzz_der.py``
- CBOR: ``tests/hardware/test_cbor.py``; link messages: ``tests/hardware/test_messages.py``
- serial frames (single frame, random bytes): ``tests/hardware/test_serial_frames.py``
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_json import mutate_fields

from fuzz.targets import TARGETS, check_one
from uptane.errors import UptaneError

EVERY_DECODER = {
    # metadata from the repositories (Primary: JSON; Secondaries: DER)
    "metadata_json": "uptane.metadata.decode(encoding=JSON)",
    "metadata_der": "uptane.metadata.decode(encoding=DER) / der.decode_metadata",
    "metadata_der_constrained": "DER targets under the Secondary's CONSTRAINED limits",
    "map_file": "uptane.metadata.MapFile.from_json (TAP 4)",
    "trust_root_timestamp": "RepositoryTrust.update_root / update_timestamp (JSON and DER)",
    "partial_verification": "PartialVerifier.verify / update_roots (DER)",
    # manifests (Director input, Secondary reports at the Primary)
    "report_json": "uptane.manifest.decode_report(JSON)",
    "report_der": "uptane.manifest.decode_report(DER)",
    "vvm_json": "uptane.manifest.decode_vehicle_manifest(JSON)",
    "vvm_der": "uptane.manifest.decode_vehicle_manifest(DER)",
    "manifest_der_any_kind": "uptane.codec.DER_CODEC.decode_manifest(kind=None) (standard DER)",
    "metadata_compact_der": "uptane.metadata.decode(encoding=COMPACT_DER) (this project's profile)",
    "manifest_compact_der_any_kind": "COMPACT_DER_CODEC.decode_manifest(kind=None)",
    # the link: CBOR messages, serial framing, PDUs from ISO-TP (CAN) or serial
    "cbor": "uptane.encoding.cbor.loads",
    "link_message": "hardware.messages.decode",
    "cobs": "hardware.serial_link.cobs_decode",
    "serial_frame": "hardware.serial_link.decode_frame",
    "serial_stream": "hardware.serial_link.FrameCodec.feed (never raises)",
    "pdu_at_secondary": "SecondaryEndpoint.receive of a real agent (never raises)",
    "pdu_at_primary": "PrimaryEndpoint.receive with a request outstanding",
    "link_envelope": "hardware.secure_link: decode_pdu, then a keyed Secondary and Primary open it",
    # secure time (issue 21): a server's response, a request at the server, an ECU's token
    "roughtime_response": "uptane.roughtime.verify_response (draft 11)",
    "roughtime_request": "uptane.roughtime.parse_request (at the time server)",
    "time_token": "uptane.roughtime.accept_token (an ECU, from its Primary)",
    # encrypted images and deltas at a Secondary (issue 17)
    "encrypted_image": "uptane.encryption.Decryptor.feed / finish",
    "delta_patch": "uptane.delta.DeltaApplier.feed / finish",
    "encryption_key_der": "uptane.encryption.EncryptionPublicKey.from_der",
    # signed content mutated and re-signed with the right keys (issue 15, fuzz/signed.py):
    # the input bytes seed the mutation; see also tests/security/test_fuzz_signed.py
    "signed_metadata": "a repository role mutated, re-signed, refreshed by a RepositoryTrust",
    "signed_manifest": "a vehicle manifest or report mutated, re-signed, §5.3.2.1 checks",
    "signed_director": "the same manifests POSTed to the Director's app in-process (< 500)",
    "signed_secondary": "Director targets mutated, re-signed, PUT_METADATA to a real agent",
}

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF, 0x30, 0xA0, 0x5B, 0x7B, 0x22, 0x9F, 0xBF]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid seed with 1 to 6 byte-level mutations."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "dup", "splice"]))
        n = len(data)
        i = draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            data[i] = draw(st.sampled_from(INTERESTING))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            del data[i : i + draw(st.integers(1, 16))]
        elif op == "cut":
            del data[i:]
        elif op == "dup" and n:
            span = data[i : i + draw(st.integers(1, 64))]
            data[i:i] = span * draw(st.integers(1, 4))
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            j = draw(st.integers(0, len(other)))
            data[i:] = other[j:]
    return bytes(data)


@st.composite
def json_structure_mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid JSON seed with one or two fields replaced by any JSON value, removed or
    added, re-encoded (what found the manifest ``_type`` bug in the long runs)."""
    doc = json.loads(draw(st.sampled_from(seeds)))
    doc = mutate_fields(draw, doc)
    return json.dumps(doc).encode()


JSON_TARGETS = {"metadata_json", "map_file", "report_json", "vvm_json"}


def test_every_decoder_is_listed_and_has_valid_seeds():
    assert set(EVERY_DECODER) == set(TARGETS)
    for target in TARGETS.values():
        assert target.seeds(), target.name


def _fuzz(name: str):
    target = TARGETS[name]
    seeds = target.seeds()

    inputs = [st.binary(max_size=512), mutated(seeds)]
    if name in JSON_TARGETS:
        inputs.append(json_structure_mutated(seeds))

    @FUZZ
    @given(data=st.one_of(*inputs))
    def run(data: bytes) -> None:
        check_one(target, data)

    return run


# one test per decoder, so a failure names it (parametrize + given would share a budget)
for _name in EVERY_DECODER:
    globals()[f"test_fuzz_{_name}_raises_only_uptane_errors"] = _fuzz(_name)


# --- inputs the long runs found (make fuzz), kept as regressions -----------------------------

FOUND = [
    # report_json, atheris run 2: a "_type" that is a list made the manifest decoder raise
    # TypeError (unhashable) instead of MalformedInput (fixed in uptane/manifest.py)
    (
        "report_json",
        b'{"signatures":[{"keyid":"bc26e4e4074a00"}],"signed":{"_type":[{"keyid"'
        b':"40"}],"\x00\x00\x00\x00\x00ter":2}}',
    ),
    ("vvm_json", b'{"signatures":[],"signed":{"_type":{"a":1}}}'),
]


@pytest.mark.parametrize("name,data", FOUND, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FOUND)])
def test_inputs_found_by_the_long_runs_raise_only_uptane_errors(name: str, data: bytes) -> None:
    with pytest.raises(UptaneError):
        TARGETS[name].run(data)
