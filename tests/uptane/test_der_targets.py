"""Partial verification over DER Director targets walked entry by entry
(uptane.encoding.der_targets for compact-der, uptane.encoding.uptane_targets for the
standard DER; uptane/partial.py): every §5.4.4.1 check still refuses its attack with the
error naming it, the walker accepts exactly what the full decoder accepts (and gives the
same values), and only the rollback floor is kept. Every test runs for both DER codecs."""

from __future__ import annotations

import copy
import hashlib
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from der_tree import dump_tree, parse_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trust_support import NOW, VIN, make_repo

from uptane.codec import codec_for
from uptane.encoding.der_targets import walk_targets
from uptane.encoding.uptane_targets import walk_uptane_targets
from uptane.errors import (
    BadEcuId,
    BadHardwareId,
    DirectorDelegation,
    EndlessDataAttack,
    ExpiredMetadata,
    LimitExceeded,
    MalformedInput,
    NonCanonicalEncoding,
    RepeatedEcuId,
    RollbackAttack,
    ThresholdNotMet,
    UptaneError,
    VehicleMismatch,
)
from uptane.keys import PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY, Limits
from uptane.metadata import (
    COMPACT_DER,
    DER,
    DelegatedRole,
    Metadata,
    Signed,
    TargetFile,
    Targets,
    decode,
)
from uptane.partial import PartialVerifier, listed_target
from uptane.verify import check_target_for_ecu

ECU, HW = "ecu-1", "hw-1"
#: the DER codec under test (the ``profile`` fixture sets it for each run)
ENC = COMPACT_DER
WALKERS = {COMPACT_DER: walk_targets, DER: walk_uptane_targets}


@pytest.fixture(autouse=True, params=[COMPACT_DER, DER])
def profile(request: pytest.FixtureRequest) -> Iterator[str]:
    global ENC
    ENC = request.param
    yield ENC
    ENC = COMPACT_DER


def walk_der(data: bytes, limits: Limits, ecu: str) -> Any:
    return WALKERS[ENC](data, limits, ecu)


def entry(path: str, ecu: str = ECU, hw: str = HW, rc: int = 3, **kw: Any) -> TargetFile:
    return TargetFile.from_data(
        path,
        path.encode(),
        ("sha256", "sha512"),
        hardware_ids=[hw],
        release_counter=rc,
        ecu_ids={ecu: hw},
        **kw,
    )


def director(targets: list[TargetFile] | None = None, **kw: Any) -> Any:
    """A DER Director whose targets list this ECU's image and two other ECUs'."""
    if targets is None:
        targets = [entry("fw/a.bin"), entry("fw/b.bin", "ecu-2"), entry("fw/c.bin", "ecu-3")]
    kw.setdefault("vehicle_id", VIN)
    return make_repo("director", targets=targets, encodings=(ENC,), **kw)


def targets_of(repo: Any) -> bytes:
    return repo.builder.files[ENC]["targets"]


def der_sign(signed: Signed, *signers: PrivateKey) -> bytes:
    """``signed`` (a copy) as DER, signed by ``signers``: an attacker holding those keys."""
    md: Metadata[Any] = Metadata(copy.deepcopy(signed), encoding=ENC)
    for s in signers:
        md.sign(s)
    return md.to_bytes()


def verifier(repo: Any, hw: str = HW, limits: Limits = CONSTRAINED) -> PartialVerifier:
    root = repo.builder.trusted_root(ENC)
    return PartialVerifier(root, ECU, hw, limits, vehicle_id=VIN, encoding=ENC)


def refused(pv: PartialVerifier, data: bytes, error: type[UptaneError], **kw: Any) -> None:
    """``data`` is refused with ``error`` and the trusted state does not move."""
    before = (pv.state(), pv.targets, dict(pv.raw))
    with pytest.raises(error) as e:
        pv.verify(data, NOW, **kw)
    assert e.value.repository == "director"
    assert (pv.state(), pv.targets, dict(pv.raw)) == before


# --- what is kept ----------------------------------------------------------------------------


def test_5_4_4_1_der_partial_keeps_only_the_rollback_floor():
    repo = director()
    pv = verifier(repo)
    mine = pv.verify(targets_of(repo), NOW, installed_release_counter=2)
    assert mine == repo.builder.targets.targets["fw/a.bin"]
    floor = pv.targets
    assert floor is not None and floor.signed.version == repo.builder.targets.version
    assert floor.signed.expires == repo.builder.targets.expires
    assert floor.signed.vehicle_id == VIN
    assert floor.signed.targets == {"fw/a.bin": mine}  # no other ECU's entry
    assert floor.signatures == [] and floor.signed_bytes is None  # never verifiable again
    assert pv.raw["targets"] == targets_of(repo)  # the exact bytes, for the caller to persist


def test_5_4_4_1_der_partial_load_rebuilds_the_floor_and_drops_a_forgery():
    repo = director()
    pv = verifier(repo)
    pv.verify(targets_of(repo), NOW)
    loaded = PartialVerifier.load(pv.raw, ECU, HW, CONSTRAINED, vehicle_id=VIN, encoding=ENC)
    assert loaded.targets == pv.targets and loaded.state() == pv.state()
    files = dict(pv.raw, targets=der_sign(repo.current("targets"), PrivateKey.generate()))
    forged = PartialVerifier.load(files, ECU, HW, CONSTRAINED, vehicle_id=VIN, encoding=ENC)
    assert forged.targets is None and forged.dropped == ["targets"]


# --- the attacks of §5.4.4.1 / §5.4.4.6 / §5.4.3.4, each named ------------------------------


def test_5_4_4_6_der_partial_refuses_targets_signed_by_a_wrong_key():
    repo = director()
    refused(
        verifier(repo), der_sign(repo.current("targets"), PrivateKey.generate()), ThresholdNotMet
    )


def test_5_4_4_6_der_partial_refuses_targets_below_the_threshold():
    repo = director(keys_per_role=2, thresholds={"targets": 2})
    pv = verifier(repo)
    assert pv.verify(targets_of(repo), NOW) is not None  # both keys: accepted
    t = repo.current("targets")
    t.version += 1
    refused(pv, der_sign(t, repo.keys["targets"][0]), ThresholdNotMet)
    # the same key twice is still one key
    refused(pv, der_sign(t, repo.keys["targets"][0], repo.keys["targets"][0]), ThresholdNotMet)


def test_5_4_4_6_der_partial_refuses_expired_targets():
    repo = director()
    t = repo.current("targets")
    t.expires = NOW - timedelta(seconds=1)
    refused(verifier(repo), der_sign(t, *repo.keys["targets"]), ExpiredMetadata)


def test_5_4_4_6_der_partial_version_must_not_decrease():
    repo = director()
    pv = verifier(repo)
    old = targets_of(repo)
    pv.verify(old, NOW)
    repo.builder.mark("targets")
    repo.publish(NOW)
    pv.verify(targets_of(repo), NOW)
    refused(pv, old, RollbackAttack)
    # the rule partial verification had before: an equal version is accepted
    assert pv.verify(targets_of(repo), NOW) is not None
    t = repo.current("targets")  # same version, other content, genuinely signed
    t.targets.pop("fw/c.bin")
    assert pv.verify(der_sign(t, *repo.keys["targets"]), NOW) is not None
    # and an expired floor still blocks a rollback after a reload
    much_later = NOW + timedelta(days=400)
    loaded = PartialVerifier.load(pv.raw, ECU, HW, CONSTRAINED, vehicle_id=VIN, encoding=ENC)
    assert loaded.targets is not None and loaded.targets.signed.is_expired(much_later)
    t.version -= 1
    t.expires = much_later + timedelta(days=1)
    with pytest.raises(RollbackAttack):
        loaded.verify(der_sign(t, *repo.keys["targets"]), much_later)


def test_5_4_4_6_der_partial_refuses_an_ecu_listed_twice():
    twice = [entry("fw/a.bin"), entry("fw/b.bin", "ecu-2"), entry("fw/z.bin")]
    repo = director(twice)
    refused(verifier(repo), targets_of(repo), RepeatedEcuId)
    # another ECU listed twice is the same attack, though this ECU's entry is fine
    repo = director([entry("fw/a.bin"), entry("fw/b.bin", "ecu-2"), entry("fw/c.bin", "ecu-2")])
    refused(verifier(repo), targets_of(repo), RepeatedEcuId)


def test_5_4_4_6_der_partial_refuses_delegations_and_another_vehicle():
    repo = director()
    repo.builder.delegate(
        "targets", DelegatedRole("d", [], 1, paths=["*"]), [PrivateKey.generate()]
    )
    repo.publish()
    refused(verifier(repo), targets_of(repo), DirectorDelegation)
    repo = director()
    t = repo.current("targets")
    t.vehicle_id = "VIN-OTHER"
    refused(verifier(repo), der_sign(t, *repo.keys["targets"]), VehicleMismatch)
    t.vehicle_id, t.targets = None, {}  # empty targets must name the vehicle (§5.2.3.1)
    refused(verifier(repo), der_sign(t, *repo.keys["targets"]), VehicleMismatch)


def test_5_4_3_4_der_partial_other_ecus_image_only():
    repo = director([entry("fw/b.bin", "ecu-2"), entry("fw/c.bin", "ecu-3")])
    pv = verifier(repo)
    assert pv.verify(targets_of(repo), NOW) is None
    assert pv.targets is not None and pv.targets.signed.targets == {}
    # the Primary then sends another ECU's image: the lookup names the attack
    theirs = listed_target(pv.raw["targets"], "fw/b.bin", CONSTRAINED, encoding=ENC)
    assert (
        theirs is not None
        and listed_target(pv.raw["targets"], "fw/x.bin", CONSTRAINED, encoding=ENC) is None
    )
    with pytest.raises(BadEcuId):
        check_target_for_ecu(theirs, ECU, HW, None)


def test_5_4_3_4_der_partial_refuses_hardware_id_mismatch_and_release_counter_rollback():
    repo = director()
    refused(verifier(repo, hw="other-hw"), targets_of(repo), BadHardwareId)
    # listed for this ECU with the right ECU hardware id, but not among the image's
    repo = director([entry("fw/a.bin", hw=HW)])
    t = repo.current("targets")
    t.targets["fw/a.bin"].hardware_ids = ["hw-9"]
    refused(verifier(repo), der_sign(t, *repo.keys["targets"]), BadHardwareId)
    repo = director()
    refused(verifier(repo), targets_of(repo), RollbackAttack, installed_release_counter=4)


def test_5_4_4_1_der_partial_refuses_truncated_ber_and_trailing_bytes():
    repo = director()
    pv = verifier(repo)
    data = targets_of(repo)
    refused(pv, data[:-1], MalformedInput)
    refused(pv, data[:40], MalformedInput)
    refused(pv, data + b"\x00", MalformedInput)
    refused(pv, b"", MalformedInput)
    # BER: the outer length in long form (0x82 0x00 0x.. would have a leading zero)
    assert data[1] == 0x82
    refused(pv, data[:1] + b"\x83\x00" + data[2:], NonCanonicalEncoding)
    # BER: indefinite length with end-of-contents
    refused(pv, data[:1] + b"\x80" + data[4:] + b"\x00\x00", NonCanonicalEncoding)
    # a non-minimal INTEGER (3 written as 00 03: compact-der's releaseCounter [0] in an
    # entry, the standard DER's numberOfTargets [0]): the re-encoding checks, before any
    # signature is looked at
    tree = parse_tree(data)
    target = _find(tree, lambda n: n[0] == 0x80 and n[1] == b"\x03")
    target[1] = b"\x00\x03"
    refused(pv, dump_tree(tree), NonCanonicalEncoding)
    tree = parse_tree(data)
    if ENC == COMPACT_DER:
        # an ECU's hardware id spelled out where it equals the target's first one (the
        # profile leaves it out): another form the per-entry re-encoding check refuses
        ecu = _find(tree, lambda n: n[0] == 0x30 and n[1] == [[0x0C, ECU.encode()]])
        ecu[1].append([0x0C, HW.encode()])
        refused(pv, dump_tree(tree), NonCanonicalEncoding)
    else:
        # in an entry, a release counter [0] written 00 03, and a numberOfHashes [2] that
        # does not count its hashes
        custom = _find(tree, lambda n: n[0] == 0xA1 and n[1][0] == [0x80, b"\x03"])
        custom[1][0][1] = b"\x00\x03"
        refused(pv, dump_tree(tree), NonCanonicalEncoding)
        tree = parse_tree(data)
        count = _find(tree, lambda n: n[0] == 0x82 and n[1] == b"\x02")  # sha256, sha512
        count[1] = b"\x01"
        refused(pv, dump_tree(tree), MalformedInput)


def test_5_4_4_6_der_partial_refuses_oversize_targets():
    repo = director()
    pv = verifier(repo)
    cap = CONSTRAINED.role_bytes["targets"]
    refused(pv, targets_of(repo) + b"\x00" * (cap + 1 - len(targets_of(repo))), EndlessDataAttack)
    refused(pv, b"\x30\x84\x7f\xff\xff\xff" + b"\x00" * 64, EndlessDataAttack)
    too_many = [
        entry(f"fw/{i:02d}.bin", f"ecu-{i:02d}") for i in range(CONSTRAINED.max_targets + 1)
    ]
    repo = director(too_many)
    refused(verifier(repo), targets_of(repo), LimitExceeded)


def _find(nodes: list[Any], match: Any) -> Any:
    """The first node of a der_tree tree (depth first) that ``match`` accepts."""
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        if match(node):
            return node
        if isinstance(node[1], list):
            stack.extend(reversed(node[1]))
    raise AssertionError("no such node")


# --- the walker against the full decoder ------------------------------------------------------


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except UptaneError as e:
        return "refused", e


def _family(e: UptaneError) -> type[UptaneError]:
    return MalformedInput if isinstance(e, MalformedInput) else type(e)


def assert_walk_equivalent(data: bytes, limits: Limits, ecu: str = ECU) -> bool:
    """The walker accepts ``data`` exactly when decode does (refusing with the same kind
    of error), and gives the same values; returns whether it was accepted."""
    old = _outcome(lambda: decode(data, limits, encoding=ENC, role_type="targets"))
    new = _outcome(lambda: walk_der(data, limits, ecu))
    assert old[0] == new[0], (old, new)
    if old[0] == "refused":
        assert _family(old[1]) == _family(new[1]), (old, new)
        return False
    md, walk = old[1], new[1]
    assert dict(walk.metadata.signed.targets.items()) == md.signed.targets
    assert len(walk.metadata.signed.targets) == len(md.signed.targets)
    assert walk.mine == next((t for t in md.signed.targets.values() if ecu in t.ecu_ids), None)
    assert bytes(walk.payload) == md.signed_bytes
    assert walk.metadata.signatures == md.signatures
    assert walk.metadata.unrecognized == md.unrecognized
    for name in ("version", "expires", "spec_version", "vehicle_id", "delegations"):
        assert getattr(walk.metadata.signed, name) == getattr(md.signed, name), name
    assert walk.metadata.signed.unrecognized == md.signed.unrecognized
    return True


#: compact-der takes any Unicode; the standard DER's VisibleString printable ASCII only
_IDENTS = {
    COMPACT_DER: st.text(alphabet="abcxyz-019é✓\U0001f600", min_size=1, max_size=10),
    DER: st.text(alphabet="abcxyz-019 ~", min_size=1, max_size=10),
}


@st.composite
def _targets(draw: Any) -> Targets:
    paths = draw(st.lists(_IDENTS[ENC], min_size=0, max_size=6, unique=True))
    other = "e✓" if ENC == COMPACT_DER else "e 4"
    ecus = draw(
        st.lists(
            st.sampled_from([ECU, "ecu-2", "ecu-3", other]),
            min_size=len(paths),
            max_size=len(paths),
        )
    )
    out = {}
    for path, ecu in zip(paths, ecus, strict=True):
        extra: dict[str, Any] = {}
        if draw(st.booleans()):
            extra["custom_extra"] = {"note": draw(st.lists(st.integers(0, 9), max_size=5))}
        if draw(st.booleans()):
            extra["url"] = "https://x/" + path
        hw = draw(st.sampled_from([HW, "hw-2"]))
        out[path] = TargetFile.from_data(
            path,
            path.encode(),
            tuple(draw(st.sampled_from([("sha256",), ("sha256", "sha512")]))),
            hardware_ids=draw(st.sampled_from([[hw], [hw, "hw-z"], []])) or [hw],
            release_counter=draw(st.one_of(st.none(), st.integers(0, 2**40))),
            ecu_ids={ecu: draw(st.sampled_from([hw, "hw-other"]))},
            **extra,
        )
    return Targets(
        version=draw(st.integers(1, 2**31)),
        expires=NOW + timedelta(days=draw(st.integers(1, 3000))),
        targets=out,
        vehicle_id=draw(st.sampled_from([VIN, None])),
    )


_KEY = PrivateKey.generate()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(signed=_targets(), limits=st.sampled_from([CONSTRAINED, PRIMARY]))
def test_der_walk_equals_the_full_decoder_on_valid_targets(signed, limits):
    data = der_sign(signed, _KEY)
    assert assert_walk_equivalent(data, limits)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(signed=_targets(), where=st.floats(0, 1), value=st.integers(0, 255))
def test_der_walk_equals_the_full_decoder_on_mutated_targets(signed, where, value):
    data = bytearray(der_sign(signed, _KEY))
    data[min(int(where * len(data)), len(data) - 1)] = value
    assert_walk_equivalent(bytes(data), CONSTRAINED)


def test_der_walk_equals_the_full_decoder_on_every_one_byte_change_and_cut():
    data = der_sign(
        Targets(
            version=2,
            expires=NOW + timedelta(days=9),
            targets={t.path: t for t in (entry("a.bin"), entry("b.bin", "ecu-2", rc=0))},
            vehicle_id=VIN,
        ),
        _KEY,
    )
    accepted = 0
    for i in range(len(data)):
        for delta in (1, 0x80):
            m = bytearray(data)
            m[i] = (m[i] + delta) & 0xFF
            accepted += assert_walk_equivalent(bytes(m), CONSTRAINED)
        assert_walk_equivalent(data[:i], CONSTRAINED)
    assert accepted > 0  # digests and signature bytes: still well formed


def test_der_walk_counts_json_items_over_the_whole_document():
    """check_tree's item cap is the whole document's: two entries that each fit but not
    together are refused by both decoders; a little less is accepted by both."""
    cap = 8 * CONSTRAINED.max_targets + 4096

    def with_notes(n: int) -> bytes:
        ts = {p: entry(p, f"ecu-{p}", custom_extra={"note": [0] * n}) for p in ("a", "b")}
        return der_sign(Targets(version=1, expires=NOW + timedelta(days=1), targets=ts), _KEY)

    assert not assert_walk_equivalent(with_notes(cap // 2 + 8), CONSTRAINED)
    with pytest.raises(LimitExceeded):
        walk_der(with_notes(cap // 2 + 8), CONSTRAINED, ECU)
    assert assert_walk_equivalent(with_notes(cap // 2 - 64), CONSTRAINED)


def test_der_walk_refuses_unsorted_and_duplicate_paths():
    """compact-der sorts the entries by path; the standard DER keeps the model's order.
    A path twice is refused by both."""
    signed = Targets(
        version=1,
        expires=NOW + timedelta(days=1),
        targets={t.path: t for t in (entry("a.bin"), entry("b.bin", "ecu-2"))},
    )
    data = der_sign(signed, _KEY)
    tree = parse_tree(data)
    body = _find(tree, lambda n: n[0] == 0xA1)  # the targets alternative of the body
    if ENC == COMPACT_DER:
        entries = body[1][0][1]  # its TargetList's children, sorted by path
        entries.reverse()
        swapped = dump_tree(tree)
        assert not assert_walk_equivalent(swapped, CONSTRAINED)
        with pytest.raises(NonCanonicalEncoding):
            walk_der(swapped, CONSTRAINED, ECU)
    else:
        entries = body[1][1][1]  # after numberOfTargets: Targets, in the model's order
        reordered = copy.deepcopy(signed)
        reordered.targets = dict(reversed(list(signed.targets.items())))
        assert assert_walk_equivalent(der_sign(reordered, _KEY), CONSTRAINED)
    entries[:] = [entries[0], entries[0]]
    if ENC == DER:
        _rehash(tree)  # the signatures' hash of the changed signed part: only the path is wrong
    twice = dump_tree(tree)
    assert not assert_walk_equivalent(twice, CONSTRAINED)
    with pytest.raises(MalformedInput, match="appears twice"):
        walk_der(twice, CONSTRAINED, ECU)


def _rehash(tree: list[Any]) -> None:
    """Standard DER: set every signature's hash (Hash.digest [1] inside [2]) to the SHA-256
    of the signed part as it now stands, and numberOfTargets to the entries' number."""
    signed = tree[0][1][0]
    body = _find([signed], lambda n: n[0] == 0xA1)
    body[1][0][1] = bytes([len(body[1][1][1])])
    digest = hashlib.sha256(dump_tree([signed])).digest()
    for sig in tree[0][1][2][1]:
        sig[1][2][1][1][1] = digest


def test_der_walk_refuses_other_roles():
    repo = director()
    for role in ("root", "snapshot", "timestamp"):
        data = repo.builder.files[ENC][role]
        assert not assert_walk_equivalent(data, CONSTRAINED)
        with pytest.raises(MalformedInput):
            walk_der(data, CONSTRAINED, ECU)


def _peak(fn: Any) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_5_4_4_1_der_partial_memory_does_not_grow_with_the_entries():
    """Bench figure 3b's property for each DER codec: the walk holds one entry at a time,
    so its peak does not grow with the file (32 entries, the constrained cap, against 4)
    and stays well under the full decoder's."""

    def file(n: int) -> bytes:
        ts = [entry(f"ecu/firmware-image-{i:04d}.bin", f"ecu-{i}") for i in range(n)]
        return targets_of(director(ts))

    small, large = file(4), file(CONSTRAINED.max_targets)
    codec = codec_for(ENC)
    codec.read_targets(small, CONSTRAINED, "ecu-1")  # warm the schema tables
    small_peak = _peak(lambda: codec.read_targets(small, CONSTRAINED, "ecu-1"))
    large_peak = _peak(lambda: codec.read_targets(large, CONSTRAINED, "ecu-1"))
    full_peak = _peak(lambda: codec.decode_metadata(large, CONSTRAINED, role_type="targets"))
    assert large_peak < small_peak + 8 * 1024, (small_peak, large_peak)
    assert 2 * large_peak < full_peak, (large_peak, full_peak)
