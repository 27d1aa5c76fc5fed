"""An image arriving at an ECU (§5.4.3.4, "decrypt if needed"; issue 17), sans-I/O.

What the link carries for an ECU's entry is one of four things, and the signed entry says
which: the image; its ciphertext (``encryptedImage`` wraps a key to this ECU); a delta
(``delta`` names the base it patches); or a delta's ciphertext. :class:`InboundImage`
takes those bytes in pieces of any size and hands on the **full image's** bytes, in
order, each only after it passed every check that can run on it so far:

1. the ciphertext: at most its signed length (endless data), each chunk authenticated
   before its plaintext moves on (:class:`uptane.encryption.Decryptor`, with the content
   key unwrapped for this ECU and image);
2. a delta's patch: at most the entry's (patch) length and its hashes
   (:class:`uptane.verify.ImageVerifier` of the entry), applied to the running image
   (:class:`uptane.delta.DeltaApplier`), once its base was found to be that image;
3. the full image: at most its length and every hash
   (:class:`uptane.verify.ImageVerifier` of :func:`uptane.delta.produced_image`).

:meth:`InboundImage.complete` requires every stream to be whole; the full image's verifier
(:attr:`InboundImage.verifier`) is finished by whoever installs the bytes (the slot
manager reads them back and hashes them again). Memory: one ciphertext chunk and one
plaintext chunk (at most 64 KiB each), the patch applier's pieces, the hash states.
"""

from __future__ import annotations

from collections.abc import Callable

from uptane.delta import DeltaApplier, ReadBase, check_delta_base, produced_image
from uptane.encryption import (
    MAX_CHUNK_SIZE,
    EncryptionPrivateKey,
    ResumePoint,
    decryptor_for,
    encrypted_for,
    transport_target,
)
from uptane.errors import EndlessDataAttack, UnsupportedAlgorithm, WrongEncryptionKey
from uptane.identity import HasIdentity
from uptane.limits import Limits
from uptane.metadata import TargetFile
from uptane.verify import ImageVerifier

#: where the full image's verified bytes go (the inactive slot); the view is valid only
#: during the call
Write = Callable[[memoryview], object]


def _ignore(data: memoryview) -> None:
    """The sink before :meth:`InboundImage.feed` names one."""


class InboundImage:
    """The bytes the link carries for ``entry`` (the Director's entry for ``ecu_id``) in,
    the full image's bytes out (see the module doc).

    ``key`` is the ECU's encryption key (needed when the entry is encrypted for it);
    ``installed`` the image it runs and ``read_base(offset, length)`` that image's bytes
    (needed for a delta). ``resume`` continues a transfer after a reboot: an encrypted one
    at the chunk a :class:`~uptane.encryption.ResumePoint` names, a plain one at a byte
    offset; the caller feeds the bytes already held to :attr:`verifier` (a delta does not
    resume after a reboot: its patch applier's state is not kept; after a link cut the same
    object simply goes on). Raises before anything
    is handed on: :class:`~uptane.errors.WrongEncryptionKey`,
    :class:`~uptane.errors.KeyUnwrapFailed`, :class:`~uptane.errors.DeltaBaseMismatch`.
    """

    def __init__(
        self,
        entry: TargetFile,
        ecu_id: str,
        limits: Limits,
        *,
        key: EncryptionPrivateKey | None = None,
        installed: HasIdentity | None = None,
        read_base: ReadBase | None = None,
        resume: ResumePoint | int | None = None,
        max_chunk_size: int = MAX_CHUNK_SIZE,
    ) -> None:
        self.entry = entry
        #: what crosses the link: the ciphertext's name, length and hashes, or the entry's
        self.wire = transport_target(entry, ecu_id)
        #: the full image this leaves in the slot, and its verifier
        self.image = produced_image(entry)
        self.verifier = ImageVerifier(self.image, limits)
        self.received = 0
        self._sink: Write = _ignore
        self._patch: tuple[ImageVerifier, DeltaApplier] | None = None
        if entry.delta is not None:
            if resume:
                raise ValueError("a delta transfer starts again after a reboot")
            self._patch = self._applier(entry, limits, installed, read_base)
        self.decryptor = None
        encrypted = encrypted_for(entry, ecu_id)
        if encrypted != isinstance(resume, ResumePoint) and resume:
            raise ValueError("an encrypted transfer resumes at a chunk, a plain one at a byte")
        if encrypted:
            if key is None:
                raise WrongEncryptionKey(
                    f"{entry.path!r} is encrypted for ECU {ecu_id!r}, which holds no "
                    "encryption key: provision one and register it with the Director"
                )
            point = resume if isinstance(resume, ResumePoint) else None
            self.decryptor = decryptor_for(
                entry, ecu_id, key, limits, max_chunk_size=max_chunk_size, resume=point
            )
            self.received = self.decryptor.received
        elif isinstance(resume, int):
            if not 0 <= resume <= entry.length:
                raise ValueError("resume offset outside the image")
            self.received = resume

    def _applier(
        self,
        entry: TargetFile,
        limits: Limits,
        installed: HasIdentity | None,
        read_base: ReadBase | None,
    ) -> tuple[ImageVerifier, DeltaApplier]:
        """The patch's verifier and applier, once the base is the running image (checked
        before anything is written: DeltaBaseMismatch)."""
        delta = check_delta_base(entry, installed)
        if read_base is None:
            raise UnsupportedAlgorithm("this ECU cannot read its running image to apply a delta")
        applier = DeltaApplier(
            read_base,
            delta.base.length,
            self._produced,
            patch_length=entry.length,
            output_length=self.image.length,
            limits=limits,
        )
        return ImageVerifier(entry, limits), applier

    @property
    def is_delta(self) -> bool:
        return self._patch is not None

    @property
    def total(self) -> int:
        """Bytes the link carries: the ciphertext's length, or the entry's."""
        return self.wire.length

    def feed(self, data: bytes | bytearray | memoryview, write: Write) -> None:
        """The next bytes off the link; ``write`` gets the full image's bytes they release."""
        n = len(data)
        if self.received + n > self.wire.length:
            raise EndlessDataAttack(
                f"{self.wire.path!r}: more than its signed {self.wire.length} bytes"
            )
        self._sink = write
        try:
            if self.decryptor is not None:
                self.decryptor.feed(data, self._plain)
            else:
                self._plain(memoryview(data).cast("B"))
        finally:
            self._sink = _ignore
        self.received += n

    def _plain(self, view: memoryview) -> None:
        """The entry's plaintext: the image, or the patch."""
        if self._patch is None:
            self._produced(view)
            return
        patch_verifier, applier = self._patch
        patch_verifier.update(view)  # its signed length first, then its hashes at the end
        applier.feed(view)

    def _produced(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.verifier.update(view)
        self._sink(view)

    def checkpoint(self) -> ResumePoint | None:
        """Where an encrypted transfer resumes after a reboot (None: from the start)."""
        return self.decryptor.checkpoint() if self.decryptor is not None else None

    def complete(self) -> None:
        """Require every stream whole: the last ciphertext chunk authenticated, the whole
        patch applied and its hashes matching. The full image's length and hashes are
        :attr:`verifier`'s (finished by the installer, which also reads the slot back)."""
        if self.decryptor is not None:
            self.decryptor.finish()
        if self._patch is not None:
            patch_verifier, applier = self._patch
            applier.finish()
            patch_verifier.finish()


__all__ = ["InboundImage", "Write"]
