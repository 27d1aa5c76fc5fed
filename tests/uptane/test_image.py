"""The streaming image check (§5.4.3.4 / §5.4.2 step 4): length bounded before hashing,
every listed hash, exact length, and the per-ECU checks on the Director's entry."""

from __future__ import annotations

import hashlib

import pytest

from uptane.errors import (
    BadEcuId,
    BadHardwareId,
    BadHash,
    BadLength,
    EndlessDataAttack,
    LimitExceeded,
    RollbackAttack,
    UnsupportedAlgorithm,
)
from uptane.limits import PRIMARY, Limits
from uptane.metadata import TargetFile
from uptane.verify import ImageVerifier, check_target_for_ecu, verify_image_bytes

IMAGE = bytes(range(256)) * 40 + b"tail"  # 10244 bytes, not a multiple of any chunk size


def _target(data: bytes = IMAGE, algorithms: tuple[str, ...] = ("sha256", "sha512")) -> TargetFile:
    return TargetFile.from_data("ecu/fw-1.bin", data, algorithms)


class _CountingHash:
    """Wraps a real hashlib object and remembers how many bytes reached it."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.fed = 0

    def update(self, data: bytes) -> None:
        self.fed += len(data)
        self.inner.update(data)  # type: ignore[attr-defined]

    def hexdigest(self) -> str:
        return self.inner.hexdigest()  # type: ignore[attr-defined]


def test_5_4_3_4_exact_image_passes_one_shot_and_in_chunks():
    verify_image_bytes(_target(), IMAGE, PRIMARY)
    v = ImageVerifier(_target(), PRIMARY)
    for i in range(0, len(IMAGE), 1000):
        v.update(IMAGE[i : i + 1000])
        assert v.remaining == len(IMAGE) - min(i + 1000, len(IMAGE))
    v.finish()


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536])
def test_5_4_3_4_chunked_feeding_equals_one_shot(chunk):
    """Any chunking gives the same verdict as feeding the whole image at once."""
    for data, ok in ((IMAGE, True), (IMAGE[:-1] + b"X", False)):
        target = _target()
        one = ImageVerifier(target, PRIMARY)
        one.update(data)
        many = ImageVerifier(target, PRIMARY)
        for i in range(0, len(data), chunk):
            many.update(memoryview(data)[i : i + chunk])
        verdicts = []
        for v in (one, many):
            try:
                v.finish()
                verdicts.append(True)
            except BadHash:
                verdicts.append(False)
        assert verdicts == [ok, ok]


def test_5_4_3_4_too_many_bytes_is_endless_data_before_hashing_past_length():
    target = _target()
    v = ImageVerifier(target, PRIMARY)
    spies = {alg: _CountingHash(h) for alg, h in v._hashers.items()}
    v._hashers = spies  # type: ignore[assignment]
    v.update(IMAGE[:10000])
    with pytest.raises(EndlessDataAttack):
        v.update(IMAGE[10000:] + b"more than signed")
    # the offending chunk never reached a hash: nothing past the signed length was hashed
    assert all(s.fed == 10000 for s in spies.values())
    assert v.received == 10000


def test_5_4_3_4_one_byte_too_many_in_one_shot_is_endless_data():
    with pytest.raises(EndlessDataAttack):
        verify_image_bytes(_target(), IMAGE + b"\x00", PRIMARY)


def test_5_4_3_4_signed_length_above_image_cap_is_refused_up_front():
    small = Limits.primary().replace(image_bytes=1000)
    with pytest.raises(EndlessDataAttack):
        ImageVerifier(_target(), small)


def test_5_4_3_4_short_image_is_bad_length():
    v = ImageVerifier(_target(), PRIMARY)
    v.update(IMAGE[:-1])
    with pytest.raises(BadLength):
        v.finish()


def test_5_4_3_4_empty_stream_is_bad_length():
    with pytest.raises(BadLength):
        ImageVerifier(_target(), PRIMARY).finish()


def test_5_4_3_4_wrong_sha512_is_bad_hash_even_when_sha256_is_right():
    target = _target()
    target.hashes["sha512"] = hashlib.sha512(b"other image").hexdigest()
    assert target.hashes["sha256"] == hashlib.sha256(IMAGE).hexdigest()
    with pytest.raises(BadHash, match="sha512"):
        verify_image_bytes(target, IMAGE, PRIMARY)


@pytest.mark.parametrize("wrong", ["sha256", "sha512", "sha384"])
def test_5_4_3_4_any_of_several_hashes_wrong_is_bad_hash(wrong):
    target = _target(algorithms=("sha256", "sha384", "sha512"))
    target.hashes[wrong] = "00" * (len(target.hashes[wrong]) // 2)
    with pytest.raises(BadHash, match=wrong):
        verify_image_bytes(target, IMAGE, PRIMARY)


def test_5_4_3_4_swapped_bytes_of_same_length_is_bad_hash():
    tampered = bytearray(IMAGE)
    tampered[5000] ^= 0xFF
    with pytest.raises(BadHash):
        verify_image_bytes(_target(), bytes(tampered), PRIMARY)


def test_5_4_3_4_uppercase_hex_digest_still_matches():
    target = _target()
    target.hashes = {a: d.upper() for a, d in target.hashes.items()}
    verify_image_bytes(target, IMAGE, PRIMARY)


@pytest.mark.parametrize("alg", ["md5", "sha-256", "crc32", ""])
def test_5_4_3_4_unknown_hash_algorithm_is_refused(alg):
    target = _target()
    target.hashes[alg] = "00" * 16
    with pytest.raises(UnsupportedAlgorithm):
        ImageVerifier(target, PRIMARY)


def test_5_4_3_4_no_hash_at_all_is_refused():
    target = _target()
    target.hashes = {}
    with pytest.raises(BadHash):
        ImageVerifier(target, PRIMARY)


def test_5_4_3_4_more_hashes_than_the_cap_is_refused():
    target = _target()
    target.hashes = {f"alg{i}": "00" for i in range(PRIMARY.max_hashes + 1)}
    with pytest.raises(LimitExceeded):
        ImageVerifier(target, PRIMARY)


# --- the per-ECU checks on the Director's entry (§5.4.3.4) ------------------------------


def _director_entry(**fields: object) -> TargetFile:
    base: dict[str, object] = {
        "hardware_ids": ["brake-v2"],
        "release_counter": 5,
        "ecu_ids": {"ecu-brake": "brake-v2"},
    }
    base.update(fields)
    return TargetFile.from_data("brake/fw-5.bin", b"brake firmware", **base)


def test_5_4_3_4_entry_for_this_ecu_and_hardware_passes():
    check_target_for_ecu(_director_entry(), "ecu-brake", "brake-v2", 5)
    check_target_for_ecu(_director_entry(), "ecu-brake", "brake-v2", None)


def test_5_4_3_4_entry_for_another_ecu_is_bad_ecu_id():
    with pytest.raises(BadEcuId):
        check_target_for_ecu(_director_entry(), "ecu-engine", "brake-v2", None)


def test_5_4_3_4_entry_for_other_hardware_is_bad_hardware_id():
    with pytest.raises(BadHardwareId):
        check_target_for_ecu(_director_entry(), "ecu-brake", "engine-v1", None)
    entry = _director_entry(hardware_ids=["engine-v1"])
    with pytest.raises(BadHardwareId):
        check_target_for_ecu(entry, "ecu-brake", "brake-v2", None)


def test_5_4_3_4_lower_release_counter_is_rollback():
    with pytest.raises(RollbackAttack):
        check_target_for_ecu(_director_entry(), "ecu-brake", "brake-v2", 6)
    with pytest.raises(RollbackAttack):
        check_target_for_ecu(_director_entry(release_counter=None), "ecu-brake", "brake-v2", 1)
