"""Delta updates (issue 17): detools sequential patches, made by the Image repository or a
supplier, applied by a Secondary from its active slot into its inactive slot.

Why detools, measured (``bench/fig11_delta.py``: a 4 MiB firmware-like image, a new version
with 5 % of its bytes changed by replaced runs, insertions and deletions; each patch applied
from files, peak by tracemalloc, one run on the shared 2-core machine):

======================================  ============  ==================================  ========
library / format                        patch / full  apply peak (traced)                 MiB/s
======================================  ============  ==================================  ========
bsdiff4 1.3.2 (BSDIFF40, bz2)           0.0451        13,994 KiB (old + patch + new)      100
detools 0.53 sequential, lzma           0.0455        8,254 KiB (the 8 MiB LZMA window)   114
detools sequential, zstd                0.0449        4,596 KiB (the zstd window)         77
detools sequential, heatshrink          0.0651        280 KiB (detools.apply_patch)       37
same, :class:`DeltaApplier` (below)     0.0651        42 KiB, 7,168-byte pieces           23
======================================  ============  ==================================  ========

bsdiff4 applies only whole images in memory, with random access into the old one; detools
makes the same bsdiff patches as a sequential stream (read the old image forward with
seeks, write the new one in order), which is what A/B slots need, and its C library applies
them on microcontrollers. Of its compressions, heatshrink is the one made for devices: a
256-byte window and 128-byte lookahead (the static build of detools' C library,
``src/c/heatshrink/heatshrink_config.h``), so decompressing costs almost no memory, for a
patch of 0.065 of the image (goal ≤ 0.15); lzma and zstd save a third of that but need the
8 MiB / 4.6 MiB window a small ECU does not have. Applying is bound by the link
(30-40 KB/s on CAN), not by 23 MiB/s. :data:`FORMAT` is that choice.

Pieces:

- :func:`create_delta` (the Image repository or a supplier): detools ``create_patch``.
- :func:`delta_target`: the patch as a target of its own, with the ``delta`` custom field
  (:class:`uptane.metadata.DeltaImage`) naming its base image and the full image it makes.
- :func:`check_delta_base`: the delta's base is the installed image (:mod:`uptane.identity`),
  else :class:`~uptane.errors.DeltaBaseMismatch` before anything is written.
- :class:`DeltaApplier`: sans-I/O, patch bytes pushed in pieces of any size (as they come off
  the link, or out of a :class:`uptane.encryption.Decryptor`), the base read and the new
  image written through two small callables (the Secondary's flash). Memory is bounded by
  the piece sizes, not by the image.
- :func:`full_image_target`: the entry the produced image is verified against with
  :class:`uptane.verify.ImageVerifier` (the full image's length and hashes).

The applier is written here rather than calling ``detools.apply_patch`` because detools
*pulls* the patch from a file object, and a Secondary is *pushed* the patch chunk by chunk
by its link handler; it parses detools' sequential format (a header byte, the target size,
then a heatshrink stream of: data-format size, and per segment a diff size and diff bytes
added to the base, an extra size and extra bytes, a signed base adjustment) and uses
detools' own ``bsdiff.add_bytes`` and the ``heatshrink2`` decoder detools uses. Every size
is checked before it is used, so a hostile patch is :class:`~uptane.errors.CorruptPatch`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import detools
from detools import bsdiff as _bsdiff
from heatshrink2.core import Encoder as _HsEncoder
from heatshrink2.core import Reader as _HsReader

from uptane.errors import CorruptPatch, DeltaBaseMismatch, EndlessDataAttack, UnsupportedAlgorithm
from uptane.identity import HasIdentity
from uptane.limits import Limits
from uptane.metadata import DeltaImage, TargetFile

#: the one patch format made and applied: detools sequential (bsdiff), heatshrink with a
#: 2^8-byte window and 2^7-byte lookahead
FORMAT = "detools-sequential-heatshrink"
#: detools header byte fields: patch type 0 (sequential), compression 4 (heatshrink)
_SEQUENTIAL, _HEATSHRINK = 0, 4
#: heatshrink window and lookahead (log2) detools and its C library use by default
WINDOW_SZ2, LOOKAHEAD_SZ2 = 8, 7
#: compressed bytes handed to the heatshrink decoder at once: a back-reference of 2 bytes
#: expands to at most 2^lookahead bytes (128), so 128 bytes decode to at most 8 KiB
_DECODE_SLICE = 128
#: the most patch bytes applied (base read, added, written) in one step
_SEGMENT_PIECE = 8 * 1024
#: the longest size field detools writes (a 64-bit value in 6 + 7k bits)
_MAX_VARINT = 10

#: ``read_base(offset, length)`` returns exactly ``length`` bytes of the base image
ReadBase = Callable[[int, int], bytes | bytearray | memoryview]
#: ``write(data)`` appends produced image bytes (the inactive slot)
Write = Callable[[bytes], object]


def create_delta(base: bytes, new: bytes) -> bytes:
    """A patch that turns ``base`` into ``new`` (:data:`FORMAT`); the Image repository's or
    a supplier's side. Holds both images in memory, as bsdiff needs."""
    out = io.BytesIO()
    detools.create_patch(
        io.BytesIO(base),
        io.BytesIO(new),
        out,
        compression="heatshrink",
        patch_type="sequential",
        heatshrink_window_sz2=WINDOW_SZ2,
        heatshrink_lookahead_sz2=LOOKAHEAD_SZ2,
    )
    return out.getvalue()


def delta_target(
    path: str,
    patch: bytes,
    base: HasIdentity,
    full: HasIdentity,
    algorithms: tuple[str, ...] = ("sha256",),
    **fields: Any,
) -> TargetFile:
    """The patch as a target of its own: its length and hashes, and the ``delta`` field
    naming the ``base`` image it applies to and the ``full`` image it produces. ``fields``
    are the usual custom fields (hardware ids, release counter, ...)."""
    tf = TargetFile.from_data(path, patch, algorithms, **fields)
    tf.delta = DeltaImage(FORMAT, base.identity(), full.identity())
    return tf


def check_delta_base(target: TargetFile, installed: HasIdentity | None) -> DeltaImage:
    """The ``delta`` field of ``target``, once its format is :data:`FORMAT` and its base is
    ``installed`` (the image in the active slot); raises before anything is written."""
    delta = target.delta
    if delta is None:
        raise UnsupportedAlgorithm(f"target {target.path!r} is not a delta")
    if delta.format != FORMAT:
        raise UnsupportedAlgorithm(
            f"delta format {delta.format[:64]!r} is not supported; this ECU applies {FORMAT!r}"
        )
    if not delta.base.same_image(installed):
        running = installed.identity().path if installed is not None else "no image"
        raise DeltaBaseMismatch(
            f"delta {target.path!r} applies to {delta.base.path!r}, this ECU runs "
            f"{running!r}; the Director should send the full image {delta.target.path!r}"
        )
    return delta


def full_image_target(target: TargetFile) -> TargetFile:
    """The full image a delta entry produces, as a target for
    :class:`uptane.verify.ImageVerifier` and the slot record: its path, length and hashes,
    with the entry's hardware ids, ECU ids and release counter."""
    if target.delta is None:
        raise UnsupportedAlgorithm(f"target {target.path!r} is not a delta")
    full = target.delta.target
    return TargetFile(
        full.path,
        full.length,
        dict(full.hashes),
        hardware_ids=list(target.hardware_ids),
        release_counter=target.release_counter,
        ecu_ids=dict(target.ecu_ids),
    )


def produced_image(target: TargetFile) -> TargetFile:
    """The image an entry leaves installed: the full image a delta produces
    (:func:`full_image_target`), else the entry itself. "Already installed" compares this
    with the installed image (a delta's own path and hashes are the patch's)."""
    return full_image_target(target) if target.delta is not None else target


def delta_path(full: HasIdentity, base: HasIdentity) -> str:
    """Where the Image repository lists the delta from ``base`` to ``full``: the full
    image's path, ``.from-`` and the first 16 hex digits of the base's SHA-256, ``.patch``
    (``brake/fw-2.bin.from-0123456789abcdef.patch``). Suppliers publish deltas under this
    name and the Director looks them up by it (a delegation of the full image's path
    pattern usually covers it); the entry's ``delta`` field, not the name, says what it
    is. ValueError when the base has no SHA-256."""
    digest = base.identity().hashes.get("sha256")
    if digest is None:
        raise ValueError("the base image has no sha256 to name its delta by")
    return f"{full.identity().path}.from-{digest.lower()[:16]}.patch"


def _varint(buf: bytearray, pos: int = 0) -> tuple[int, int] | None:
    """detools' size field at ``buf[pos:]``: (value, bytes used), None if incomplete. The
    first byte holds a sign bit (0x40) and 6 value bits, the next ones 7 bits each; 0x80
    means another byte follows."""
    avail = len(buf) - pos
    for i in range(min(avail, _MAX_VARINT)):
        if not buf[pos + i] & 0x80:
            first = buf[pos]
            value = first & 0x3F
            for j in range(1, i + 1):
                value |= (buf[pos + j] & 0x7F) << (6 + 7 * (j - 1))
            return (-value if first & 0x40 else value), i + 1
    if avail >= _MAX_VARINT:
        raise CorruptPatch("a size field of the patch is too long")
    return None


# parser states of the decompressed stream
_DF_SIZE, _DIFF_SIZE, _DIFF, _EXTRA_SIZE, _EXTRA, _ADJUST, _END = range(7)


class DeltaApplier:
    """Applies a :data:`FORMAT` patch pushed in pieces (sans-I/O).

    ``read_base(offset, length)`` reads the base image (the active slot; the patch reads it
    forward with relative seeks), ``write(data)`` appends to the new image (the inactive
    slot). ``patch_length`` is the delta target's signed length and ``output_length`` the
    full image's: the patch must declare that size, write exactly that many bytes and end
    with the last of its ``patch_length`` bytes. Feed the produced bytes to an
    :class:`uptane.verify.ImageVerifier` of :func:`full_image_target` as well (in ``write``).
    """

    def __init__(
        self,
        read_base: ReadBase,
        base_length: int,
        write: Write,
        *,
        patch_length: int,
        output_length: int,
        limits: Limits,
    ) -> None:
        if output_length > limits.image_bytes or patch_length > limits.image_bytes:
            raise EndlessDataAttack(f"delta: images are capped at {limits.image_bytes} bytes")
        self._read_base, self._write = read_base, write
        self.base_length = base_length
        self.patch_length = patch_length
        self.output_length = output_length
        self.received = 0
        self.produced = 0
        self._raw = bytearray()  # the uncompressed patch header, until it is complete
        self._decoder: Any = None  # heatshrink decoder, once its header byte arrived
        self._stream_over = False  # the compressed stream ended (or there is none)
        self._pending = bytearray()  # decompressed bytes not parsed yet (< one size field)
        self._state = _DF_SIZE
        self._left = 0  # bytes left in the current diff or extra segment
        self._base_pos = 0

    # --- the raw layer: header byte, target size, heatshrink header ------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """The next patch bytes; writes whatever they produce."""
        view = memoryview(data).cast("B")
        if self.received + len(view) > self.patch_length:
            raise EndlessDataAttack(f"delta: more than its {self.patch_length} patch bytes")
        self.received += len(view)
        pos = 0
        if self._decoder is None and not self._stream_over:
            pos = self._take_header(view)
        for start in range(pos, len(view), _DECODE_SLICE):
            self._parse(self._decode(view[start : min(start + _DECODE_SLICE, len(view))]))
        if self.received == self.patch_length and not self._stream_over and self._decoder:
            self._parse(self._decode(None))
            self._stream_over = True

    def _take_header(self, view: memoryview) -> int:
        """Collect the uncompressed header (type/compression, size, heatshrink byte); the
        number of bytes of ``view`` it took."""
        pos = 0
        while self._decoder is None and not self._stream_over and pos < len(view):
            self._raw.append(view[pos])
            pos += 1
            self._check_header()
        return pos

    def _check_header(self) -> None:
        raw = self._raw
        if len(raw) == 1 and raw[0] != (_SEQUENTIAL << 4 | _HEATSHRINK):
            raise CorruptPatch(
                f"patch header {raw[0]:#04x}: not a detools sequential heatshrink patch ({FORMAT})"
            )
        if len(raw) < 2:
            return
        size = _varint(raw, 1)
        if size is None:
            return
        to_size, used = size
        if to_size != self.output_length:
            raise CorruptPatch(
                f"the patch makes a {to_size}-byte image, the target says {self.output_length}"
            )
        if len(raw) == 1 + used:
            if to_size == 0:  # detools writes nothing after an empty image's size
                self._stream_over = True
                self._state = _END
            return
        window, lookahead = (raw[-1] >> 4) + 4, (raw[-1] & 0x0F) + 3
        if (window, lookahead) != (WINDOW_SZ2, LOOKAHEAD_SZ2):
            # only detools' default: it bounds what one decode slice expands to
            raise CorruptPatch(
                f"heatshrink window 2^{window} / lookahead 2^{lookahead}; {FORMAT} "
                f"patches use 2^{WINDOW_SZ2} / 2^{LOOKAHEAD_SZ2}"
            )
        self._decoder = _HsEncoder(_HsReader(window_sz2=window, lookahead_sz2=lookahead))

    def _decode(self, piece: memoryview | None) -> bytes:
        """Decompress ``piece`` (None: the end of the stream)."""
        if self._stream_over or self._decoder is None:
            raise CorruptPatch("patch bytes after the end of its compressed stream")
        try:
            out = self._decoder.finish() if piece is None else self._decoder.fill(bytes(piece))
        except (ValueError, RuntimeError, TypeError) as e:
            raise CorruptPatch(f"the patch does not decompress: {type(e).__name__}") from None
        return bytes(out)

    # --- the decompressed layer ----------------------------------------------------------

    def _parse(self, data: bytes) -> None:
        self._pending += data
        pos = 0
        while pos < len(self._pending):
            if self._state in (_DIFF, _EXTRA):
                n = min(self._left, len(self._pending) - pos, _SEGMENT_PIECE)
                self._segment(bytes(self._pending[pos : pos + n]))
                pos += n
                continue
            if self._state == _END:
                raise CorruptPatch("the patch goes on after the image is complete")
            size = _varint(self._pending, pos)
            if size is None:
                break
            pos += size[1]
            self._field(size[0])
        del self._pending[:pos]

    def _segment(self, patch: bytes) -> None:
        """Diff bytes are added to the base bytes at the base position; extra bytes are
        copied. Either is written to the new image."""
        n = len(patch)
        if self._state == _DIFF:
            if self._base_pos < 0 or self._base_pos + n > self.base_length:
                raise CorruptPatch(
                    f"the patch reads base bytes {self._base_pos}..{self._base_pos + n}, "
                    f"the base is {self.base_length} bytes"
                )
            base = bytes(self._read_base(self._base_pos, n))
            if len(base) != n:
                raise CorruptPatch("the base image ended early")
            out = _bsdiff.add_bytes(patch, base)
            self._base_pos += n
        else:
            out = patch
        self._write(out)
        self.produced += n
        self._left -= n
        if self._left == 0:
            self._state = _EXTRA_SIZE if self._state == _DIFF else _ADJUST

    def _field(self, value: int) -> None:
        """A size field in the current state: check it, then move on."""
        state = self._state
        if state == _DF_SIZE:
            if value != 0:
                raise CorruptPatch("data-format patches (detools --data-format) are not applied")
            self._state = _DIFF_SIZE
        elif state in (_DIFF_SIZE, _EXTRA_SIZE):
            if value < 0:
                raise CorruptPatch(f"a patch segment of {value} bytes (negative)")
            if self.produced + value > self.output_length:
                raise CorruptPatch(
                    f"a patch segment of {value} bytes at {self.produced} overruns the "
                    f"{self.output_length}-byte image"
                )
            self._left = value
            following = _DIFF if state == _DIFF_SIZE else _EXTRA
            self._state = following if value else (_EXTRA_SIZE if state == _DIFF_SIZE else _ADJUST)
        elif state == _ADJUST:
            self._base_pos += value
            self._state = _DIFF_SIZE if self.produced < self.output_length else _END

    def finish(self) -> None:
        """Require the whole patch and the whole image (exactly ``output_length`` bytes)."""
        if self.received != self.patch_length:
            raise CorruptPatch(
                f"the patch ended after {self.received} of its {self.patch_length} bytes"
            )
        if self._state != _END or self._pending:
            raise CorruptPatch(
                f"the patch ended before the image was complete ({self.produced} of "
                f"{self.output_length} bytes)"
            )


def apply_delta(
    read_patch: Callable[[int], bytes],
    read_base: ReadBase,
    base_length: int,
    write: Write,
    *,
    patch_length: int,
    output_length: int,
    limits: Limits,
) -> int:
    """Pull a stored patch through a :class:`DeltaApplier` in ``limits.chunk_size`` pieces
    (``read_patch(n)`` returns up to ``n`` bytes, empty at the end); the bytes produced."""
    applier = DeltaApplier(
        read_base,
        base_length,
        write,
        patch_length=patch_length,
        output_length=output_length,
        limits=limits,
    )
    while applier.received < patch_length:
        piece = read_patch(min(limits.chunk_size, patch_length - applier.received))
        if not piece:
            break
        applier.feed(piece)
    applier.finish()
    return applier.produced


__all__ = [
    "FORMAT",
    "DeltaApplier",
    "apply_delta",
    "check_delta_base",
    "create_delta",
    "delta_path",
    "delta_target",
    "full_image_target",
    "produced_image",
]
