"""ECU version reports (§5.4.2.1.2) and vehicle version manifests (§5.4.2.1.1) in JSON and
DER: round trips, signatures, strict bounded decoding, and the Director's checks (§5.3.2.1)."""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from uptane.encoding import der, uptane_der
from uptane.errors import (
    BadEcuId,
    BadSignature,
    EndlessDataAttack,
    LimitExceeded,
    MalformedInput,
    NonCanonicalEncoding,
    ReplayAttack,
    ReportTimeSkew,
    RollbackAttack,
    VehicleMismatch,
)
from uptane.keys import ECDSA, ED25519, PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.manifest import (
    ECU_REPORT,
    VEHICLE_MANIFEST,
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    UnreachableEcu,
    VehicleVersionManifest,
    attack_indicator,
    build_vehicle_manifest,
    check_manifest_against_inventory,
    check_report,
    check_report_freshness,
    check_vehicle_manifest,
    decode_report,
    decode_vehicle_manifest,
)
from uptane.metadata import COMPACT_DER, DER, JSON, TargetFile

NOW = datetime(2030, 3, 4, 5, 6, 7, tzinfo=UTC)
ENCODINGS = [JSON, DER, COMPACT_DER]


@pytest.fixture(scope="module")
def ecu_keys() -> dict[str, PrivateKey]:
    return {
        "PRIMARY-1": PrivateKey.generate(ED25519),
        "BRAKE-7": PrivateKey.generate(ECDSA),
        "RADIO-3": PrivateKey.generate(ED25519),
    }


def make_report(ecu_id: str, **kw) -> EcuVersionReport:
    tf = TargetFile.from_data(f"{ecu_id.lower()}/fw.bin", b"fw-" + ecu_id.encode(), ("sha256",))
    fields = {"nonce": b"\x01\x02\x03\x04" * 4, "release_counter": 3, **kw}
    if "counter" in kw:
        fields.pop("nonce")
    return EcuVersionReport(ecu_id, InstalledImage.from_target(tf), NOW, **fields)


def signed_report(report: EcuVersionReport, key: PrivateKey, encoding: str):
    s = SignedManifest(report, encoding=encoding)
    s.sign(key)
    return s


def make_vvm(ecu_keys, encoding: str, **kw):
    reports = [
        signed_report(make_report("PRIMARY-1"), ecu_keys["PRIMARY-1"], encoding),
        signed_report(
            make_report("BRAKE-7", counter=41, attack="rollback: release counter 2 < 3"),
            ecu_keys["BRAKE-7"],
            encoding,
        ),
        signed_report(
            make_report(
                "RADIO-3",
                previous_time=NOW - timedelta(days=1),
                release_counter=None,
                unrecognized={"x-slot": "B"},
            ),
            ecu_keys["RADIO-3"],
            encoding,
        ),
    ]
    return build_vehicle_manifest(
        "VIN0001", "PRIMARY-1", reports, ecu_keys["PRIMARY-1"], encoding=encoding, **kw
    )


# --- round trips and signatures -----------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_5_4_2_1_2_ecu_report_roundtrip_and_signature(ecu_keys, encoding):
    report = make_report("BRAKE-7", previous_time=NOW - timedelta(hours=1))
    s = signed_report(report, ecu_keys["BRAKE-7"], encoding)
    data = s.to_bytes()
    back = decode_report(data, PRIMARY, encoding)
    assert back.signed.to_dict() == report.to_dict()
    assert back.signed == report
    assert back.encoding == encoding
    assert back.signed_bytes == s.signed_bytes
    assert back.to_bytes() == data
    back.verify(ecu_keys["BRAKE-7"].key)
    assert check_report(back, ecu_keys["BRAKE-7"].key, expected_ecu_id="BRAKE-7") == report


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_5_4_2_1_1_vehicle_manifest_roundtrip_and_signatures(ecu_keys, encoding):
    vvm = make_vvm(ecu_keys, encoding, attack="freeze: director metadata expired")
    data = vvm.to_bytes()
    back = decode_vehicle_manifest(data, PRIMARY, encoding)
    assert back.to_dict() == vvm.to_dict()
    assert back.to_bytes() == data
    body = check_vehicle_manifest(
        back,
        ecu_keys["PRIMARY-1"].key,
        expected_vehicle_id="VIN0001",
        expected_primary_id="PRIMARY-1",
    )
    assert body.attack == "freeze: director metadata expired"
    assert [r.signed.ecu_id for r in body.reports] == ["PRIMARY-1", "BRAKE-7", "RADIO-3"]
    # §5.3.2.1: each report is checked with that ECU's own key
    for ecu_id, key in ecu_keys.items():
        report = body.report_for(ecu_id)
        assert report is not None and report.encoding == encoding
        check_report(report, key.key, expected_ecu_id=ecu_id)
    assert body.report_for("BRAKE-7").signed.attack_name == "rollback"
    assert body.report_for("nope") is None


@pytest.mark.parametrize("encoding", [DER, COMPACT_DER])
def test_5_4_2_1_1_der_manifest_signed_bytes_are_the_input(ecu_keys, encoding):
    """compact-der signs the signed part's bytes; the standard DER (POUF 1) the SHA-256 of
    them, the [0]-tagged signed part as it stands in the envelope, named in every
    signature's hash."""
    vvm = make_vvm(ecu_keys, encoding)
    data = vvm.to_bytes()
    back = decode_vehicle_manifest(data, PRIMARY, encoding)

    def span(b: bytes) -> bytes:  # the envelope's first child: its signed part
        inner, _ = der._header(b, 0)
        start, length = der._header(b, inner)
        assert b[inner] == (0xA0 if encoding == DER else 0x30)
        return b[inner : start + length]

    spans = [span(data)] + [span(r.to_bytes()) for r in back.signed.reports]
    signed = [back.signed_bytes] + [r.signed_bytes for r in back.signed.reports]
    if encoding == DER:
        assert signed == [hashlib.sha256(span).digest() for span in spans]
        assert all(data.count(digest) == 1 for digest in signed)  # in each signature's hash
    else:
        assert signed == spans
    # the kind is found from the structure when not pinned
    assert SignedManifest.from_bytes(data, PRIMARY, encoding).kind == VEHICLE_MANIFEST
    one = back.signed.reports[0].to_bytes()
    assert SignedManifest.from_bytes(one, PRIMARY, encoding).kind == ECU_REPORT


def test_5_4_2_1_der_is_smaller_than_json(ecu_keys):
    json_size = len(make_vvm(ecu_keys, JSON).to_bytes())
    assert len(make_vvm(ecu_keys, COMPACT_DER).to_bytes()) < 0.6 * json_size
    assert len(make_vvm(ecu_keys, DER).to_bytes()) < 0.7 * json_size


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_5_3_2_1_report_signed_by_another_key_is_refused(ecu_keys, encoding):
    s = signed_report(make_report("BRAKE-7"), ecu_keys["RADIO-3"], encoding)
    back = decode_report(s.to_bytes(), PRIMARY, encoding)
    with pytest.raises(BadSignature):
        check_report(back, ecu_keys["BRAKE-7"].key, expected_ecu_id="BRAKE-7")
    with pytest.raises(BadEcuId):
        check_report(back, ecu_keys["RADIO-3"].key, expected_ecu_id="RADIO-3")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_5_3_2_1_tampered_report_inside_manifest_fails_its_ecu_signature(ecu_keys, encoding):
    vvm = make_vvm(ecu_keys, encoding)
    brake = vvm.signed.report_for("BRAKE-7")
    brake.signed.release_counter = 99  # a compromised Primary rewrites a Secondary's report
    vvm.sign(ecu_keys["PRIMARY-1"])
    back = decode_vehicle_manifest(vvm.to_bytes(), PRIMARY, encoding)
    check_vehicle_manifest(back, ecu_keys["PRIMARY-1"].key, expected_vehicle_id="VIN0001")
    with pytest.raises(BadSignature):
        check_report(
            back.signed.report_for("BRAKE-7"), ecu_keys["BRAKE-7"].key, expected_ecu_id="BRAKE-7"
        )


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_5_3_2_1_manifest_identity_and_signature(ecu_keys, encoding):
    back = decode_vehicle_manifest(make_vvm(ecu_keys, encoding).to_bytes(), PRIMARY, encoding)
    with pytest.raises(VehicleMismatch):
        check_vehicle_manifest(back, ecu_keys["PRIMARY-1"].key, expected_vehicle_id="VIN0002")
    with pytest.raises(BadEcuId):
        check_vehicle_manifest(
            back,
            ecu_keys["PRIMARY-1"].key,
            expected_vehicle_id="VIN0001",
            expected_primary_id="OTHER",
        )
    with pytest.raises(BadSignature):
        check_vehicle_manifest(back, ecu_keys["BRAKE-7"].key, expected_vehicle_id="VIN0001")


def test_5_3_2_1_signatures_do_not_cross_encodings(ecu_keys):
    s = signed_report(make_report("BRAKE-7"), ecu_keys["BRAKE-7"], JSON)
    as_der = decode_report(s.to_bytes(DER), PRIMARY, DER)
    with pytest.raises(BadSignature):
        as_der.verify(ecu_keys["BRAKE-7"].key)
    with pytest.raises(MalformedInput):
        build_vehicle_manifest("VIN", "P", [s], ecu_keys["PRIMARY-1"], encoding=DER)


def test_5_4_2_1_2_report_carries_attack_indicator():
    report = make_report("BRAKE-7", attack=attack_indicator(RollbackAttack("counter 2 < 3")))
    assert report.attack == "rollback: counter 2 < 3"
    assert report.attack_name == "rollback"
    assert make_report("BRAKE-7").attack_name is None
    multi_line = attack_indicator(MalformedInput("bad\n    while parsing\tX"), 20)
    assert multi_line == "malformed-input: bad"


def test_5_4_2_1_2_report_needs_exactly_one_of_nonce_and_counter():
    img = InstalledImage("f", 1, {"sha256": "00"})
    with pytest.raises(MalformedInput):
        EcuVersionReport("X", img, NOW, nonce=b"\x01", counter=1)
    with pytest.raises(MalformedInput):
        EcuVersionReport("X", img, NOW)
    d = make_report("X").to_dict()
    d["counter"] = 5
    with pytest.raises(MalformedInput):
        EcuVersionReport.from_dict(d, PRIMARY)
    del d["nonce"], d["counter"]
    with pytest.raises(MalformedInput):
        EcuVersionReport.from_dict(d, PRIMARY)


# --- the Director's freshness check (§5.3.2.1) ---------------------------------------------


def test_5_3_2_1_reused_nonce_is_a_replay():
    report = make_report("BRAKE-7", nonce=b"n1")
    check_report_freshness(report, None, NOW, timedelta(minutes=5))
    check_report_freshness(report, {b"n0"}, NOW, timedelta(minutes=5))
    with pytest.raises(ReplayAttack):
        check_report_freshness(report, {b"n0", b"n1"}, NOW, timedelta(minutes=5))
    with pytest.raises(ReplayAttack):
        check_report_freshness(report, 4, NOW, timedelta(minutes=5))


def test_5_3_2_1_counter_must_increase():
    report = make_report("BRAKE-7", counter=10)
    check_report_freshness(report, None, NOW, timedelta(minutes=5))
    check_report_freshness(report, 9, NOW, timedelta(minutes=5))
    for last in (10, 11):
        with pytest.raises(ReplayAttack):
            check_report_freshness(report, last, NOW, timedelta(minutes=5))
    with pytest.raises(ReplayAttack):
        check_report_freshness(report, [b"n"], NOW, timedelta(minutes=5))


def test_5_3_2_1_report_time_must_be_recent():
    """Outside the window: a wrong clock (ReportTimeSkew, not an attack) unless the report
    is older than one already accepted from that ECU (a stale report sent again)."""
    report = make_report("BRAKE-7", counter=10)
    skew = timedelta(minutes=5)
    check_report_freshness(report, 9, NOW + skew, skew)
    with pytest.raises(ReportTimeSkew):
        check_report_freshness(report, 9, NOW + skew + timedelta(seconds=1), skew)
    with pytest.raises(ReportTimeSkew):
        check_report_freshness(report, 9, NOW - skew - timedelta(seconds=1), skew)
    later = NOW + skew + timedelta(seconds=1)
    with pytest.raises(ReplayAttack, match="stale report"):
        check_report_freshness(report, 9, later, skew, last_time=NOW + timedelta(seconds=1))


def test_5_3_2_1_expected_nonce_of_this_cycle(ecu_keys):
    s = signed_report(make_report("BRAKE-7", nonce=b"cycle-2"), ecu_keys["BRAKE-7"], DER)
    key = ecu_keys["BRAKE-7"].key
    check_report(s, key, expected_ecu_id="BRAKE-7", expected_nonce=b"cycle-2")
    with pytest.raises(ReplayAttack):
        check_report(s, key, expected_ecu_id="BRAKE-7", expected_nonce=b"cycle-3")


# --- strict, bounded decoding -----------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_manifest_byte_cap_and_ecu_cap(ecu_keys, encoding):
    data = make_vvm(ecu_keys, encoding).to_bytes()
    with pytest.raises(EndlessDataAttack):
        decode_vehicle_manifest(data, PRIMARY.replace(manifest_bytes=len(data) - 1), encoding)
    with pytest.raises(LimitExceeded):
        decode_vehicle_manifest(data, PRIMARY.replace(max_ecus=2), encoding)
    assert decode_vehicle_manifest(data, CONSTRAINED, encoding).signed.vehicle_id == "VIN0001"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_manifest_refuses_wrong_kind_and_duplicates(ecu_keys, encoding):
    vvm = make_vvm(ecu_keys, encoding)
    with pytest.raises(MalformedInput):
        decode_report(vvm.to_bytes(), PRIMARY, encoding)
    vvm.signed.reports.append(vvm.signed.reports[0])
    vvm.sign(ecu_keys["PRIMARY-1"])
    with pytest.raises(MalformedInput, match="two reports"):
        decode_vehicle_manifest(vvm.to_bytes(), PRIMARY, encoding)


def test_manifest_strings_are_bounded(ecu_keys):
    for encoding in ENCODINGS:
        s = signed_report(make_report("E" * 300), ecu_keys["BRAKE-7"], encoding)
        with pytest.raises(LimitExceeded):
            decode_report(s.to_bytes(), PRIMARY, encoding)
        s = signed_report(make_report("E", nonce=b"\x00" * 65), ecu_keys["BRAKE-7"], encoding)
        with pytest.raises(LimitExceeded):
            decode_report(s.to_bytes(), PRIMARY, encoding)


def test_json_report_must_write_back_unchanged(ecu_keys):
    s = signed_report(make_report("BRAKE-7"), ecu_keys["BRAKE-7"], JSON)
    text = s.to_bytes().decode()
    odd = text.replace("2030-03-04T05:06:07Z", "2030-3-04T05:06:07Z")
    with pytest.raises(NonCanonicalEncoding):
        decode_report(odd.encode(), PRIMARY, JSON)
    with pytest.raises(MalformedInput):
        decode_report(text.replace('"signatures"', '"extra":1,"signatures"').encode(), PRIMARY)
    # non-canonical JSON *bytes* are fine: the signature covers the canonical form
    spaced = text.replace(",", ", ").encode()
    decode_report(spaced, PRIMARY, JSON).verify(ecu_keys["BRAKE-7"].key)


def test_der_manifest_is_strict(ecu_keys):
    data = signed_report(make_report("BRAKE-7", counter=5), ecu_keys["BRAKE-7"], DER).to_bytes()
    with pytest.raises(MalformedInput, match="trailing"):
        decode_report(data + b"\x00", PRIMARY, DER)
    inner = data[2:] if data[1] < 0x80 else data[2 + (data[1] & 0x7F) :]
    with pytest.raises(NonCanonicalEncoding):
        decode_report(b"\x30\x80" + inner + b"\x00\x00", PRIMARY, DER)
    with pytest.raises(MalformedInput):
        der.decode_manifest(data, PRIMARY, kind=VEHICLE_MANIFEST)
    with pytest.raises(MalformedInput):
        SignedManifest.from_bytes(b"\x30\x03\x30\x01\x05", PRIMARY, DER)
    # nonce and counter both present in DER is refused by the model
    doc = SignedManifest.from_bytes(data, PRIMARY, DER).to_dict()
    doc["signed"]["nonce"] = "00"
    with pytest.raises(MalformedInput):
        SignedManifest.from_bytes(der.encode_manifest(doc), PRIMARY, DER)


def test_vehicle_manifest_dataclass_defaults():
    vvm = VehicleVersionManifest("VIN", "P")
    assert vvm.to_dict()["ecu_version_reports"] == []
    assert VehicleVersionManifest.from_dict(vvm.to_dict(), PRIMARY) == vvm


@pytest.mark.parametrize(
    "encoding",
    [
        JSON,
        DER,
    ],
)
def test_5_4_2_1_2_report_text_with_control_characters_is_refused(ecu_keys, encoding):
    """An attack indicator is one line of text in every encoding (uptane/policy.py: no
    control character in an indicator; issue 15)."""
    report = make_report("BRAKE-7", attack="freeze: line one\nline two")
    if encoding == DER:  # the modules' securityAttack is a VisibleString: printable ASCII
        with pytest.raises(MalformedInput, match="VisibleString"):
            signed_report(report, ecu_keys["BRAKE-7"], encoding)
        return
    data = signed_report(report, ecu_keys["BRAKE-7"], encoding).to_bytes()
    with pytest.raises(MalformedInput, match="control character U\\+000A"):
        decode_report(data, PRIMARY, encoding)


def test_5_4_2_1_2_attack_indicator_is_one_line_of_printable_ascii(ecu_keys):
    """So that every report can carry it in the standard DER (a VisibleString)."""
    from uptane.errors import BadSignature

    text = attack_indicator(BadSignature("key 3a06…\x01 for 'fw/é.bin'\nnext"))
    assert text == "bad-signature: key 3a06\\u2026\\x01 for 'fw/\\xe9.bin' next"
    report = make_report("BRAKE-7", attack=text)
    data = signed_report(report, ecu_keys["BRAKE-7"], DER).to_bytes()
    assert decode_report(data, PRIMARY, DER).signed == report


def test_json_signed_part_is_compared_as_a_tree_and_signed_bytes_are_canonical(ecu_keys):
    """The write-back check compares trees; it refuses exactly what a canonical-bytes
    comparison refuses (upper-case hex, a bool where an int goes), keeps unknown fields,
    and the bytes signed are the canonical JSON of the signed part received."""
    import json

    from uptane.encoding.json import canonical

    report = make_report("BRAKE-7", nonce=b"\xab" * 16)
    s = signed_report(report, ecu_keys["BRAKE-7"], JSON)
    doc = json.loads(s.to_bytes())
    nonce = doc["signed"]["nonce"]
    doc["signed"]["nonce"] = nonce.upper()
    with pytest.raises(NonCanonicalEncoding):
        decode_report(json.dumps(doc).encode(), PRIMARY, JSON)
    doc["signed"]["nonce"] = nonce
    doc["signed"]["release_counter"] = True
    with pytest.raises(MalformedInput):
        decode_report(json.dumps(doc).encode(), PRIMARY, JSON)
    del doc["signed"]["release_counter"]
    doc["signed"]["x-oem"] = {"flag": True, "n": 1}
    back = decode_report(json.dumps(doc).encode(), PRIMARY, JSON)
    assert back.signed.unrecognized == {"x-oem": {"flag": True, "n": 1}}
    assert back.signed_bytes == canonical(doc["signed"])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_5_3_2_1_every_registered_ecu_reports_exactly_once_and_no_other(ecu_keys, encoding):
    """The manifest-vs-inventory rule (uptane.manifest.check_manifest_against_inventory)."""
    inventory = {serial: key.key for serial, key in ecu_keys.items()}
    vvm = make_vvm(ecu_keys, encoding)
    body, reports = check_manifest_against_inventory(
        vvm, vehicle_id="VIN0001", primary_id="PRIMARY-1", ecu_keys=inventory
    )
    assert sorted(reports) == sorted(inventory) and body.vehicle_id == "VIN0001"
    # an ECU registered but silent
    extra = {**inventory, "TCU-9": PrivateKey.generate(ED25519).key}
    with pytest.raises(BadEcuId, match="no report from registered ECU"):
        check_manifest_against_inventory(
            vvm, vehicle_id="VIN0001", primary_id="PRIMARY-1", ecu_keys=extra
        )
    # a report from an ECU the inventory does not list
    fewer = {s: k for s, k in inventory.items() if s != "RADIO-3"}
    with pytest.raises(BadEcuId, match="not registered"):
        check_manifest_against_inventory(
            vvm, vehicle_id="VIN0001", primary_id="PRIMARY-1", ecu_keys=fewer
        )
    # an ECU that reports twice
    twice = make_vvm(ecu_keys, encoding)
    twice.signed.reports.append(twice.signed.reports[1])
    twice.sign(ecu_keys["PRIMARY-1"])
    with pytest.raises(BadEcuId, match="twice"):
        check_manifest_against_inventory(
            twice, vehicle_id="VIN0001", primary_id="PRIMARY-1", ecu_keys=inventory
        )
    # a Primary the inventory does not know, and a report signed by the wrong key
    with pytest.raises(BadEcuId):
        check_manifest_against_inventory(
            vvm, vehicle_id="VIN0001", primary_id="GW-2", ecu_keys=inventory
        )
    swapped = {**inventory, "BRAKE-7": inventory["RADIO-3"]}
    with pytest.raises(BadSignature):
        check_manifest_against_inventory(
            vvm, vehicle_id="VIN0001", primary_id="PRIMARY-1", ecu_keys=swapped
        )


# --- unreachable ECUs: represented by the Primary, with no version claim (§5.3.2.1) ------


def make_partial_vvm(ecu_keys, encoding: str, unreachable, *, reporting=("PRIMARY-1", "BRAKE-7")):
    """A manifest in which only ``reporting`` report; ``unreachable`` entries name others."""
    reports = [signed_report(make_report(e), ecu_keys[e], encoding) for e in reporting]
    return build_vehicle_manifest(
        "VIN0001",
        "PRIMARY-1",
        reports,
        ecu_keys["PRIMARY-1"],
        encoding=encoding,
        unreachable=unreachable,
    )


DEAD = UnreachableEcu("RADIO-3", "timeout: no answer on CAN after 3 tries", NOW - timedelta(days=2))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_5_3_2_1_unreachable_entry_roundtrips_inside_the_primarys_signature(ecu_keys, encoding):
    never = UnreachableEcu("TCU-9", "not connected since provisioning")
    vvm = make_partial_vvm(ecu_keys, encoding, [DEAD, never])
    data = vvm.to_bytes()
    back = decode_vehicle_manifest(data, PRIMARY, encoding)
    assert back.to_bytes() == data and back.to_dict() == vvm.to_dict()
    assert back.signed.unreachable == [DEAD, never]
    assert back.signed.to_dict()["unreachable_ecus"] == [
        {"ecu_id": "RADIO-3", "reason": DEAD.reason, "last_seen": "2030-03-02T05:06:07Z"},
        {"ecu_id": "TCU-9", "reason": "not connected since provisioning"},
    ]
    back.verify(ecu_keys["PRIMARY-1"].key)
    # the entry is under the Primary's signature: changing it breaks the signature
    back.signed.unreachable[0].reason = "asleep"
    back.signed_bytes = None
    with pytest.raises(BadSignature):
        back.verify(ecu_keys["PRIMARY-1"].key)
    # a manifest without unreachable ECUs has no such field at all
    assert "unreachable_ecus" not in make_vvm(ecu_keys, encoding).signed.to_dict()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_5_3_2_1_every_registered_ecu_is_represented_once_by_a_report_or_unreachable(
    ecu_keys, encoding
):
    inventory = {serial: key.key for serial, key in ecu_keys.items()}
    check = functools.partial(
        check_manifest_against_inventory,
        vehicle_id="VIN0001",
        primary_id="PRIMARY-1",
        ecu_keys=inventory,
    )
    body, reports = check(make_partial_vvm(ecu_keys, encoding, [DEAD]))
    assert sorted(reports) == ["BRAKE-7", "PRIMARY-1"]  # no version claim for RADIO-3
    assert [u.ecu_id for u in body.unreachable] == ["RADIO-3"]
    # silent without an entry: refused as before
    with pytest.raises(BadEcuId, match="no report from registered ECU"):
        check(make_partial_vvm(ecu_keys, encoding, []))
    # an entry for an ECU the inventory does not list, or for the Primary itself
    with pytest.raises(BadEcuId, match="not registered"):
        check(make_partial_vvm(ecu_keys, encoding, [DEAD, UnreachableEcu("GHOST", "x")]))
    with pytest.raises(BadEcuId, match="signed this manifest"):
        check(
            make_partial_vvm(
                ecu_keys,
                encoding,
                [DEAD, UnreachableEcu("PRIMARY-1", "x")],
                reporting=("BRAKE-7",),
            )
        )
    # reported and unreachable at once (built in memory; decoding refuses it too)
    both = make_partial_vvm(ecu_keys, encoding, [DEAD, UnreachableEcu("BRAKE-7", "x")])
    with pytest.raises(BadEcuId, match="represented twice"):
        check(both)
    with pytest.raises(MalformedInput, match="named twice"):
        decode_vehicle_manifest(both.to_bytes(), PRIMARY, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_5_3_2_1_a_reported_ecu_keeps_every_check_when_another_is_unreachable(ecu_keys, encoding):
    inventory = {serial: key.key for serial, key in ecu_keys.items()}
    forged = make_partial_vvm(ecu_keys, encoding, [DEAD])
    forged.signed.reports[1] = signed_report(make_report("BRAKE-7"), ecu_keys["RADIO-3"], encoding)
    forged.sign(ecu_keys["PRIMARY-1"])
    with pytest.raises(BadSignature):
        check_manifest_against_inventory(
            forged, vehicle_id="VIN0001", primary_id="PRIMARY-1", ecu_keys=inventory
        )
    # the Primary's own signature still covers everything, the entries included
    other = make_partial_vvm(ecu_keys, encoding, [DEAD])
    other.sign(ecu_keys["BRAKE-7"])
    with pytest.raises(BadSignature):
        check_manifest_against_inventory(
            other, vehicle_id="VIN0001", primary_id="PRIMARY-1", ecu_keys=inventory
        )


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_unreachable_entries_are_strict_and_bounded(ecu_keys, encoding):
    doc = make_partial_vvm(ecu_keys, JSON, [DEAD]).to_dict()

    encode = {JSON: lambda d: json.dumps(d).encode(), DER: uptane_der.encode_manifest}.get(
        encoding, der.encode_manifest
    )

    def decode(signed: dict):
        return decode_vehicle_manifest(encode({**doc, "signed": signed}), PRIMARY, encoding)

    signed = doc["signed"]
    with pytest.raises(MalformedInput, match="omit unreachable_ecus"):
        decode({**signed, "unreachable_ecus": []})
    with pytest.raises(MalformedInput, match="reason must not be empty"):
        decode({**signed, "unreachable_ecus": [{"ecu_id": "RADIO-3", "reason": ""}]})
    with pytest.raises(MalformedInput, match="ecu_id"):
        decode({**signed, "unreachable_ecus": [{"ecu_id": "", "reason": "x"}]})
    with pytest.raises(LimitExceeded):
        decode({**signed, "unreachable_ecus": [{"ecu_id": "R", "reason": "x" * 5000}]})
    many = [{"ecu_id": f"E{i}", "reason": "x"} for i in range(PRIMARY.max_ecus)]
    with pytest.raises(LimitExceeded):
        decode({**signed, "unreachable_ecus": many})
    if encoding == JSON:  # DER has no place for them: its encoder refuses them first
        with pytest.raises(MalformedInput, match="unknown fields"):
            decode({**signed, "unreachable_ecus": [{**DEAD.to_dict(), "x": 1}]})
        with pytest.raises(NonCanonicalEncoding):
            decode(
                {
                    **signed,
                    "unreachable_ecus": [{**DEAD.to_dict(), "last_seen": "2030-3-02T05:06:07Z"}],
                }
            )
    else:
        with pytest.raises(MalformedInput, match=r"DER cannot carry|no place in the modules"):
            encode({**doc, "signed": {**signed, "unreachable_ecus": [{**DEAD.to_dict(), "x": 1}]}})
    assert decode(signed).signed.unreachable == [DEAD]
