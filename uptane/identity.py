"""Image identity: the one answer to "is this the same image?".

The Director (is the assigned image installed?), the Primary (is this transfer the one I
started? did the ECU install what it was sent?), the Secondary (is this image already in
my active slot?), the slot manager and the verifier all ask it. They used to answer with
seven functions of three meanings, so an upper-case hash or one extra hash algorithm could
make the Director say "installed" while the Secondary said "different": update loops and
false attack reports. Every one of them now calls :func:`same_image`.

The rule (docs/core.md, "Image identity"):

1. the paths are equal (exact string; a path is checked and normalised when decoded);
2. the lengths are equal;
3. every hash algorithm that *both* sides carry gives the same digest, the hex compared
   without regard to case (``"AB01"`` is ``"ab01"``);
4. at least one of the common algorithms is a strong one (:data:`STRONG_HASHES`): two
   descriptions that share only a weak or no algorithm are never "the same".

Algorithms only one side carries are ignored: a report may list sha256 alone while the
targets entry lists sha256 and sha512, and they still name the same image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

#: Hash algorithms that identify an image on their own (at least 256-bit digests from a
#: current hash family). sha224 is accepted by the verifier but is not enough to identify.
STRONG_HASHES = frozenset(
    {"sha256", "sha384", "sha512", "sha512_256", "sha3_256", "sha3_384", "sha3_512", "blake2b"}
)


@dataclass(frozen=True)
class ImageIdentity:
    """What names an image: its path, its length in bytes, and its digests by algorithm."""

    path: str
    length: int
    hashes: Mapping[str, str]

    def identity(self) -> ImageIdentity:
        return self

    def same_image(self, other: HasIdentity | None) -> bool:
        """True when ``other`` names the same image (the module's rule)."""
        return same_image(self, other)

    def to_dict(self) -> dict[str, Any]:
        """A JSON form for state files: ``{"path", "length", "hashes"}``."""
        return {"path": self.path, "length": self.length, "hashes": dict(self.hashes)}

    @classmethod
    def from_dict(cls, d: Any) -> ImageIdentity | None:
        """The identity a state file holds, or None when ``d`` is not one (state files are
        this agent's own, but a damaged one must not crash it)."""
        if not isinstance(d, dict):
            return None
        path, length, hashes = d.get("path"), d.get("length"), d.get("hashes")
        if (
            not isinstance(path, str)
            or type(length) is not int
            or not isinstance(hashes, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items())
        ):
            return None
        return cls(path, length, dict(hashes))


class HasIdentity(Protocol):
    """Anything that describes an image: a targets entry, a report's installed image, a
    slot's record, an assignment."""

    def identity(self) -> ImageIdentity: ...


def same_image(a: HasIdentity | None, b: HasIdentity | None) -> bool:
    """The one definition of image identity (see the module doc); None is never the same
    as anything."""
    if a is None or b is None:
        return False
    x, y = a.identity(), b.identity()
    if x.path != y.path or x.length != y.length:
        return False
    common = x.hashes.keys() & y.hashes.keys()
    if not common & STRONG_HASHES:
        return False
    return all(x.hashes[alg].lower() == y.hashes[alg].lower() for alg in common)


__all__ = ["STRONG_HASHES", "HasIdentity", "ImageIdentity", "same_image"]
