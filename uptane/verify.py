"""Checks of images against the metadata that names them.

- :func:`check_target_for_ecu`: the per-ECU checks before install (§5.4.3.4): the ECU id
  entry, the hardware id and the release counter. Used by full verification, by partial
  verification and by every Secondary.
- :class:`ImageVerifier`: a streaming checker fed in chunks (§5.4.3.4): no more bytes than
  the signed length, every listed hash, and the exact length.

Full verification across the Director and the Image repository (§5.4.4.2) also lives here.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from uptane.errors import (
    BadEcuId,
    BadHardwareId,
    BadHash,
    BadLength,
    EndlessDataAttack,
    RollbackAttack,
    UnsupportedAlgorithm,
)
from uptane.limits import Limits
from uptane.metadata import TargetFile

HASH_ALGORITHMS = ("sha256", "sha512", "sha384", "sha224", "sha3_256", "sha3_512", "blake2b")


def check_target_for_ecu(
    target: TargetFile,
    ecu_id: str,
    hardware_id: str,
    installed_release_counter: int | None,
    *,
    repository: str = "director",
) -> None:
    """§5.4.3.4: the Director entry names this ECU, for this hardware, and does not roll the
    release counter back below what is installed."""
    if ecu_id not in target.ecu_ids:
        raise BadEcuId(
            f"target {target.path!r} is not for ECU {ecu_id!r}",
            repository=repository,
            role="targets",
        )
    listed_hw = target.ecu_ids[ecu_id]
    if listed_hw != hardware_id or (target.hardware_ids and hardware_id not in target.hardware_ids):
        raise BadHardwareId(
            f"target {target.path!r} is for hardware {listed_hw!r}, this ECU is {hardware_id!r}",
            repository=repository,
            role="targets",
        )
    check_release_counter(target, installed_release_counter, repository=repository)


def check_release_counter(
    target: TargetFile, previous: int | None, *, repository: str = "director"
) -> None:
    """§5.4.3.4 / §5.4.4.2: the release counter must not be lower than the previous one."""
    if previous is None:
        return
    counter = target.release_counter if target.release_counter is not None else 0
    if counter < previous:
        raise RollbackAttack(
            f"release counter {counter} of {target.path!r} is below the installed {previous}",
            repository=repository,
            role="targets",
        )


class ImageVerifier:
    """Streams image bytes through every listed hash (§5.4.3.4).

    ``update`` refuses bytes past the signed length (endless data) before hashing them;
    ``finish`` requires the exact length and every hash to match. Memory does not grow with
    the image: only the hash states are kept.
    """

    def __init__(self, target: TargetFile, limits: Limits) -> None:
        if target.length > limits.image_bytes:
            raise EndlessDataAttack(
                f"image {target.path!r} is {target.length} bytes, the cap is {limits.image_bytes}"
            )
        limits.check_count("image hashes", len(target.hashes), limits.max_hashes)
        self.target = target
        self.received = 0
        self._hashers: dict[str, Any] = {}
        for alg in target.hashes:
            if alg not in HASH_ALGORITHMS:
                raise UnsupportedAlgorithm(f"hash algorithm {alg!r} cannot be checked")
            self._hashers[alg] = hashlib.new(alg)
        if not self._hashers:
            raise BadHash(f"image {target.path!r} lists no hash")

    def update(self, chunk: bytes | memoryview) -> None:
        """Feed the next chunk; refuses anything past the signed length."""
        n = len(chunk)
        if self.received + n > self.target.length:
            raise EndlessDataAttack(
                f"image {self.target.path!r} sent more than its {self.target.length} bytes"
            )
        self.received += n
        for h in self._hashers.values():
            h.update(chunk)

    @property
    def remaining(self) -> int:
        """Bytes still expected."""
        return self.target.length - self.received

    def finish(self) -> None:
        """Require the exact length and every hash; raises BadLength or BadHash."""
        if self.received != self.target.length:
            raise BadLength(
                f"image {self.target.path!r} is {self.received} bytes, "
                f"signed length is {self.target.length}"
            )
        for alg, h in self._hashers.items():
            expected = self.target.hashes[alg].lower()
            if not hmac.compare_digest(h.hexdigest(), expected):
                raise BadHash(f"image {self.target.path!r}: {alg} does not match")


def verify_image_bytes(target: TargetFile, data: bytes, limits: Limits) -> None:
    """Check a whole image held in memory (tests, small images): length and every hash."""
    v = ImageVerifier(target, limits)
    v.update(data)
    v.finish()
