"""Image identity (uptane/identity.py): the one rule every part uses to decide whether two
descriptions name the same image."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from hardware.slots import ImageInfo
from uptane.identity import STRONG_HASHES, ImageIdentity, same_image
from uptane.manifest import InstalledImage
from uptane.metadata import TargetFile

DATA = b"firmware 2.0"
SHA256 = hashlib.sha256(DATA).hexdigest()
SHA512 = hashlib.sha512(DATA).hexdigest()
SHA224 = hashlib.sha224(DATA).hexdigest()


def _flip_case(text: str, mask: list[bool]) -> str:
    return "".join(
        c.upper() if m else c for c, m in zip(text, mask + [False] * len(text), strict=False)
    )


@given(st.lists(st.booleans(), max_size=128))
def test_identity_hex_case_does_not_matter(mask: list[bool]) -> None:
    a = TargetFile("fw/a.bin", len(DATA), {"sha256": SHA256})
    b = InstalledImage("fw/a.bin", len(DATA), {"sha256": _flip_case(SHA256, mask)})
    assert same_image(a, b) and same_image(b, a)


@given(st.sampled_from(sorted(STRONG_HASHES - {"sha256"})), st.text("0123456789abcdef"))
def test_identity_an_extra_algorithm_on_one_side_is_ignored(alg: str, digest: str) -> None:
    a = TargetFile("fw/a.bin", len(DATA), {"sha256": SHA256, alg: digest})
    b = ImageIdentity("fw/a.bin", len(DATA), {"sha256": SHA256.upper()})
    assert same_image(a, b) and same_image(b, a)


@given(st.integers(0, len(SHA512) - 1))
def test_identity_every_common_algorithm_must_agree(pos: int) -> None:
    bad = SHA512[:pos] + ("0" if SHA512[pos] != "0" else "1") + SHA512[pos + 1 :]
    a = ImageIdentity("fw/a.bin", len(DATA), {"sha256": SHA256, "sha512": SHA512})
    b = ImageIdentity("fw/a.bin", len(DATA), {"sha256": SHA256, "sha512": bad})
    assert not same_image(a, b) and not same_image(b, a)


def test_identity_path_and_length_must_match() -> None:
    a = ImageIdentity("fw/a.bin", len(DATA), {"sha256": SHA256})
    assert not same_image(a, ImageIdentity("fw/b.bin", len(DATA), {"sha256": SHA256}))
    assert not same_image(a, ImageIdentity("fw/a.bin", len(DATA) + 1, {"sha256": SHA256}))
    assert not same_image(a, ImageIdentity("FW/A.BIN", len(DATA), {"sha256": SHA256}))


def test_identity_needs_a_common_strong_hash() -> None:
    only224 = ImageIdentity("fw/a.bin", len(DATA), {"sha224": SHA224})
    assert not same_image(only224, only224)
    disjoint_a = ImageIdentity("fw/a.bin", len(DATA), {"sha256": SHA256})
    disjoint_b = ImageIdentity("fw/a.bin", len(DATA), {"sha512": SHA512})
    assert not same_image(disjoint_a, disjoint_b)
    mixed = ImageIdentity("fw/a.bin", len(DATA), {"sha224": SHA224, "sha256": SHA256})
    assert same_image(mixed, ImageIdentity("fw/a.bin", len(DATA), {"sha256": SHA256}))


def test_identity_none_is_never_the_same() -> None:
    a = ImageIdentity("fw/a.bin", len(DATA), {"sha256": SHA256})
    assert not same_image(a, None) and not same_image(None, a) and not same_image(None, None)


def test_identity_every_description_agrees() -> None:
    """A targets entry, a report's installed image and a slot's record of one image are
    all "the same", whatever the hash case each carries."""
    target = TargetFile("fw/a.bin", len(DATA), {"sha256": SHA256, "sha512": SHA512})
    report = InstalledImage("fw/a.bin", len(DATA), {"sha256": SHA256.upper()})
    slot = ImageInfo("fw/a.bin", len(DATA), {"sha512": SHA512.upper(), "sha256": SHA256})
    for x in (target, report, slot):
        for y in (target, report, slot):
            assert x.identity().same_image(y)


def test_identity_round_trips_through_state_files() -> None:
    a = ImageIdentity("fw/a.bin", len(DATA), {"sha256": SHA256})
    assert ImageIdentity.from_dict(a.to_dict()) == a
    for bad in (None, [], {"path": 1}, {"path": "x", "length": True, "hashes": {}}):
        assert ImageIdentity.from_dict(bad) is None
