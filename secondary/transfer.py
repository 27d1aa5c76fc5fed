"""PUT_IMAGE on a Secondary: an image streams into the inactive slot, survives a reboot, and
is installed into the slot.

- Chunks stream straight into the inactive slot (:class:`hardware.slots.SlotWriter`)
  through :class:`uptane.inbound.InboundImage` (issue 17): the image itself, or its
  ciphertext (decrypted and authenticated chunk by chunk with this ECU's encryption key),
  or a delta (applied to the running image in the active slot), or an encrypted delta;
  what reaches the slot is the full image, through its verifier. Bytes past the signed
  length are refused before they are written; memory is one chunk buffer (and one
  ciphertext chunk), the patch applier's pieces and the hash states. A transfer
  interrupted by the link resumes at the acknowledged offset (the offsets on the link
  count the bytes that cross it: ciphertext or patch).
- Slow retrieval (§5.4, every ECU SHALL monitor its download speed): the chunks go through
  :class:`uptane.speed.SpeedMonitor` with the agent's monotonic clock. Once a window of
  ``speed_window`` seconds averages less than ``min_bytes_per_second`` (the Limits
  profile, overridable in the TOML ``[link]`` table), the chunk is refused with
  :class:`~uptane.errors.SlowRetrievalAttack`. Nothing is installed; the bytes already
  received stay as a partial the next cycle resumes. Only an active transfer is measured:
  a pause longer than ``speed_window`` with no chunk (the Primary between two cycles, a
  link that dropped) starts a fresh window at the next chunk (a stall is the link
  timeouts' business, not a slow transfer).
- Checkpoints: every ``checkpoint_bytes`` the slot is committed and the transfer's identity
  and durable offset are stored (TRANSFER, TRANSFER_AT in :mod:`secondary.state`), so after
  a reboot the agent verifies the metadata again, :meth:`ImageReceiver.resume` rebuilds the
  hash states from the slot, and the transfer continues at that offset (an encrypted one
  at the last whole ciphertext chunk the slot holds, its header kept in the record). A
  delta is not checkpointed: after a reboot it starts again (the Primary sends it from
  byte 0), since the patch applier's state lives in RAM only.
- :meth:`ImageReceiver.install`: :meth:`~hardware.slots.SlotManager.finish_install` (exact
  length, every hash, read-back) switches to a trial boot; the checkpoint goes either way.

Which image may be received, and what becomes trusted with it, is the agent's business
(:mod:`secondary.agent`); this module only moves bytes into a slot.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hardware.flash import Flash
from hardware.slot_lifecycle import SlotState
from hardware.slots import SlotManager, SlotWriter
from secondary.state import TRANSFER, TRANSFER_AT, AgentState
from secondary.verification import Files
from storage import AtomicStore
from uptane.encoding import cbor
from uptane.encryption import EncryptionPrivateKey, Header, ResumePoint
from uptane.errors import (
    BadLength,
    EndlessDataAttack,
    MalformedInput,
    ProtocolViolation,
    SlowRetrievalAttack,
    UptaneError,
)
from uptane.identity import HasIdentity, ImageIdentity
from uptane.inbound import InboundImage
from uptane.limits import Limits
from uptane.metadata import TargetFile
from uptane.speed import SpeedMonitor
from uptane.verify import ImageVerifier

log = logging.getLogger(__name__)


@dataclass
class Transfer:
    """An image being received into the inactive slot: ``filename`` is the entry's path,
    ``total`` and :attr:`offset` count the bytes that cross the link (the ciphertext or
    the patch, when that is what comes), ``entry`` is the Director's entry."""

    filename: str
    total: int
    entry: TargetFile
    stream: InboundImage
    writer: SlotWriter
    #: §5.4 slow retrieval: the speed of this transfer's chunks over the link
    speed: SpeedMonitor
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    saved: int = 0  # the offset of the last checkpoint (0: none stored)
    #: the bytes flushed at the last checkpoint attempt (on erase blocks an attempt may
    #: find nothing new durable: the next one waits for ``checkpoint_bytes`` more)
    tried: int = 0

    @property
    def offset(self) -> int:
        """Bytes received over the link."""
        return self.stream.received

    @property
    def verifier(self) -> ImageVerifier:
        """The full image's verifier (what the slot receives)."""
        return self.stream.verifier

    def continues(self, filename: str, total: int, offset: int) -> bool:
        """Whether a chunk of ``filename`` (``total`` bytes) at ``offset`` is this
        transfer's next one."""
        return self.filename == filename and self.total == total and self.offset == offset


@dataclass(frozen=True)
class Checkpoint:
    """A stored transfer to resume after a reboot: the image and where it stands, and the
    metadata it was verified from (to verify again before a byte more is taken)."""

    id: str
    image: ImageIdentity
    slot: str
    offset: int
    files: Files
    #: [[repository, version, bytes]] of the root versions sent with that metadata
    roots: list[tuple[str, int, bytes]]
    #: the ciphertext's header, for an encrypted transfer (its chunks resume from it)
    header: bytes | None = None


def check_length(entry: HasIdentity, filename: str, total: int) -> None:
    """§5.4.3.3: the announced length is the signed one (never more): the image's, or
    what crosses the link for it (its ciphertext's)."""
    length = entry.identity().length
    if total > length:
        raise EndlessDataAttack(
            f"image {filename[:64]!r} of {total} bytes, the signed length is {length}"
        )
    if total < length:
        raise BadLength(f"image {filename[:64]!r} of {total} bytes, the signed length is {length}")


def speed_monitor(limits: Limits, filename: str) -> SpeedMonitor:
    """§5.4 slow retrieval for one image transfer over the link. The window starts at the
    first chunk; a pause of more than a window with no chunk is not measured (the Primary
    between cycles, a dropped link: see the module doc)."""
    return SpeedMonitor(
        limits.min_bytes_per_second,
        limits.speed_window,
        what=f"image {filename[:64]!r} over the link",
        idle=limits.speed_window,
    )


class ImageReceiver:
    """The image transfer of one Secondary: at most one at a time (:attr:`current`), into
    the inactive slot of ``slots``, with checkpoints in the agent's store."""

    def __init__(
        self,
        slots: SlotManager,
        flash: Flash,
        state: AgentState,
        *,
        checkpoint_bytes: int,
        clock: Callable[[], float],
        ecu_id: str = "",
        encryption_key: EncryptionPrivateKey | None = None,
    ) -> None:
        self.slots = slots
        self.flash = flash
        self.state = state
        self.limits = state.limits
        #: this ECU's id and encryption key: what an entry encrypted for it is opened with
        self.ecu_id = ecu_id
        self.encryption_key = encryption_key
        #: commit the slot and store the transfer's offset every this many image bytes
        self.checkpoint_bytes = checkpoint_bytes
        #: a monotonic clock in seconds, read for the slow-retrieval check only
        self.clock = clock
        self.current: Transfer | None = None

    @property
    def store(self) -> AtomicStore:
        return self.state.store

    # --- receiving ----------------------------------------------------------------------

    def _stream(self, entry: TargetFile, resume: ResumePoint | int | None = None) -> InboundImage:
        """What turns the bytes the link carries for ``entry`` into the full image: keys
        unwrapped and a delta's base checked here, before the slot is touched."""
        status = self.slots.status()
        # the slot the running image is in (a delta's base; the inactive one is written)
        running = status.booted if status.booted is not None else status.active

        def read_base(offset: int, length: int) -> bytes:
            return self.flash.read(running, offset, length)

        return InboundImage(
            entry,
            self.ecu_id,
            self.limits,
            key=self.encryption_key,
            installed=status.installed,
            read_base=read_base,
            resume=resume,
        )

    def begin(self, entry: TargetFile, filename: str, total: int) -> Transfer:
        """Start receiving ``entry`` (its other checks are the caller's) at offset 0:
        ``total`` bytes are announced for ``filename``, which must be what crosses the link
        for this ECU (§5.4.3.3: the image's signed length, or its ciphertext's)."""
        stream = self._stream(entry)
        check_length(stream.wire, filename, total)
        writer = self.slots.begin_install(stream.image.length, stream.image)
        speed = speed_monitor(self.limits, entry.path)
        self.current = Transfer(entry.path, stream.total, entry, stream, writer, speed)
        return self.current

    def write(self, x: Transfer, chunk: bytes) -> None:
        """The next chunk of ``x``, through the speed check and the verifier into the slot;
        a refused chunk aborts the transfer unless it was only too slow (the partial is
        kept, so a later, faster transfer resumes it)."""
        try:
            # §5.4 slow retrieval: a chunk that ends a window below the floor is refused
            x.speed.update(len(chunk), self.clock())
        except SlowRetrievalAttack as e:
            log.warning("image transfer refused: %s", e)
            raise
        try:
            # §4.3 endless data: the stream refuses bytes past the signed length before
            # they reach the slot, and hands on only authenticated, verified-so-far bytes
            x.stream.feed(chunk, x.writer.write)
        except UptaneError:
            self.abort("image chunk refused")
            raise

    def abort(self, reason: str) -> None:
        """Give up the transfer in progress, if any (its checkpoint goes with it)."""
        x = self.current
        if x is not None:
            self.current = None
            self._forget(x)
            if self.slots.state is SlotState.INSTALLING:
                self.slots.abort_install(reason)

    def ready(self, filename: str | None) -> Transfer:
        """The transfer INSTALL names, complete."""
        x = self.current
        if x is None:
            raise BadLength("no image was received to install")
        if filename is not None and filename != x.filename:
            raise ProtocolViolation(f"INSTALL of {filename[:64]!r}, received {x.filename!r}")
        if x.offset != x.total:
            raise BadLength(f"image {x.filename!r}: {x.offset} of {x.total} bytes received")
        return x

    def install(self, x: Transfer) -> None:
        """Every stream whole (the last ciphertext chunk, the whole patch and its hashes),
        then exact length, every hash of the full image, read-back, and the switch to a
        trial boot (:meth:`SlotManager.finish_install`); the checkpoint is dropped either
        way."""
        self.current = None
        try:
            try:
                x.stream.complete()
            except UptaneError as e:
                self.slots.abort_install(f"image refused: {e.message}")
                raise
            self.slots.finish_install(x.writer, x.stream.verifier)
        finally:
            self._forget(x)  # installed or rejected: never resumed

    # --- checkpoints --------------------------------------------------------------------

    def checkpoint_due(self, x: Transfer, entry: TargetFile, source: dict[str, list[Any]]) -> None:
        """Checkpoint ``x`` when ``checkpoint_bytes`` more reached the slot since the last
        one (never at the end: INSTALL follows)."""
        if x.stream.is_delta:
            return  # a delta starts again after a reboot (see the module doc)
        if x.writer.flushed - max(x.saved, x.tried) >= self.checkpoint_bytes and x.offset < x.total:
            self._checkpoint(x, entry, source)

    def _checkpoint(self, x: Transfer, entry: TargetFile, source: dict[str, list[Any]]) -> None:
        """Make the bytes received so far durable and record where to resume: the slot is
        committed before the record that claims its bytes is written. On a flash with
        erase blocks the durable offset is the last block boundary: when that is not past
        the last checkpoint (16 KiB blocks, 8 KiB checkpoints: the first one would record
        offset 0, which a resume refuses) nothing is recorded this time."""
        x.tried = x.writer.flushed
        durable = x.writer.sync()
        if durable <= x.saved:
            return
        if not x.saved:
            rec = {
                "id": x.id,
                "filename": x.filename,
                "total": entry.length,
                "slot": x.writer.slot,
                "hashes": dict(entry.hashes),
                **source,
            }
            point = x.stream.checkpoint()
            if point is not None:
                rec["header"] = point.header  # an encrypted transfer resumes at its chunks
            self.store.write(TRANSFER, cbor.dumps(rec))
        self.store.write_json(TRANSFER_AT, {"id": x.id, "offset": durable})
        x.saved = durable

    def _forget(self, x: Transfer) -> None:
        """Drop the stored checkpoint of ``x`` (before its slot is reused or installed)."""
        if x.saved:
            self.store.delete(TRANSFER_AT)

    def discard_checkpoint(self) -> None:
        """Drop a stored checkpoint that will not be resumed."""
        self.store.delete(TRANSFER_AT)
        self.store.delete(TRANSFER)

    def _record_cap(self) -> tuple[int, int]:
        """Byte and item caps of the TRANSFER record: every metadata file and root sent."""
        lim = self.limits
        files = 2 * lim.max_roles + 2
        roots = 2 * lim.max_root_rotations
        biggest = max(lim.delegated_targets_bytes, *lim.role_bytes.values())
        size = files * biggest + roots * lim.bytes_for_role("root") + lim.map_file_bytes
        return size + 4096, files + roots + 16

    def stored_checkpoint(self) -> Checkpoint | None:
        """The checkpoint stored before a reboot: None when there is none; raises
        MalformedInput (or ProtocolViolation) for one that cannot be resumed."""
        at = self.state.load_json(TRANSFER_AT)
        if at is None:
            return None
        size, items = self._record_cap()
        data = self.store.read(TRANSFER, max_bytes=size)
        if data is None:
            raise MalformedInput("no transfer record")
        rec = cbor.loads(data, self.limits, cap=size, max_items=items, max_total=4 * items)
        if not isinstance(rec, dict) or not isinstance(at, dict):
            raise MalformedInput("the transfer record is damaged")
        if not isinstance(rec.get("id"), str) or at.get("id") != rec["id"]:
            raise MalformedInput("the transfer records do not match")
        cp = _parse(rec, at.get("offset"))
        if cp.slot != self.slots.inactive_slot():
            raise ProtocolViolation(f"the partial image is in slot {cp.slot}, not the inactive one")
        return cp

    def resume(self, cp: Checkpoint, entry: TargetFile) -> Transfer:
        """Continue ``cp`` as the transfer of ``entry`` (verified again by the caller): the
        hash states are rebuilt from the bytes the slot holds, one chunk at a time. An
        encrypted transfer goes back to the last whole ciphertext chunk the slot holds
        (on an erase-block boundary too, where the writer may erase from)."""
        offset, point = self._resume_point(cp)
        try:
            stream = self._stream(entry, point if point is not None else offset)
        except ValueError as e:
            raise MalformedInput(f"the checkpoint does not fit the entry: {e}") from None
        if stream.is_delta:
            raise MalformedInput("a delta transfer is not resumed after a reboot")
        step = self.limits.chunk_size
        for off in range(0, offset, step):
            stream.verifier.update(self.flash.read(cp.slot, off, min(step, offset - off)))
        writer = self.slots.resume_install(stream.image, offset)
        speed = speed_monitor(self.limits, entry.path)
        self.current = Transfer(
            entry.path, stream.total, entry, stream, writer, speed, id=cp.id, saved=offset
        )
        return self.current

    def _resume_point(self, cp: Checkpoint) -> tuple[int, ResumePoint | None]:
        """The slot offset to resume at and, for an encrypted transfer, its chunk."""
        if cp.header is None:
            return cp.offset, None
        try:
            chunk = Header.parse(cp.header).chunk_size
        except UptaneError:
            raise MalformedInput("the transfer record's ciphertext header is damaged") from None
        step = math.lcm(chunk, self.flash.erase_block or 1)
        offset = cp.offset - cp.offset % step
        if offset == 0:
            raise MalformedInput("no whole ciphertext chunk is durable yet: start again")
        return offset, ResumePoint(cp.header, offset // chunk)


def _parse(rec: dict[str, Any], offset: Any) -> Checkpoint:
    """The TRANSFER record ``rec`` at ``offset``; MalformedInput when it is damaged."""
    filename, total, slot = rec.get("filename"), rec.get("total"), rec.get("slot")
    files, roots, hashes = rec.get("files"), rec.get("roots"), rec.get("hashes")
    header = rec.get("header")
    if (
        not isinstance(filename, str)
        or type(total) is not int
        or type(offset) is not int
        or not 0 < offset <= total
        or not isinstance(slot, str)
        or not isinstance(files, list)
        or not isinstance(roots, list)
        or not isinstance(hashes, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items())
        or not (header is None or isinstance(header, bytes))
    ):
        raise MalformedInput("the transfer record is damaged")
    try:
        received = {(str(r), str(role)): bytes(body) for r, role, body in files}
        sent_roots = [(str(r), int(version), bytes(root)) for r, version, root in roots]
    except (TypeError, ValueError):
        raise MalformedInput("the transfer record is damaged") from None
    image = ImageIdentity(filename, total, dict(hashes))
    return Checkpoint(str(rec["id"]), image, slot, offset, received, sent_roots, header)
