"""A/B install for a Secondary, on top of :class:`hardware.flash.Flash`.

A new image streams into the inactive slot in fixed-size chunks while the caller feeds the
same chunks to :class:`uptane.verify.ImageVerifier`. :meth:`SlotManager.finish_install`
reads the slot back through a second verifier and only then switches the boot flag to a
TRIAL of the new slot, in the same boot-control record as the image's filename, length,
hashes and release counter. :meth:`SlotManager.boot` plays the bootloader: it boots the
trial slot at most ``max_trial_boots`` times and, if nobody called
:meth:`SlotManager.confirm`, reverts to the old slot and records why, so the next version
report can say so.

Which of these moves is allowed when is one table, :mod:`hardware.slot_lifecycle`
(IDLE, INSTALLING, TRIAL, TRIAL_BOOTED); every public method here asks it first, and a
move it refuses raises a named error with nothing changed.

Invariant kept at every write point: every slot the boot-control record names an image for
holds exactly that image's bytes, and the record never points a boot at any other slot.
See docs/ab-install.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hardware.flash import BootRecord, Flash, other_slot
from hardware.slot_lifecycle import OUTCOMES, Outcome, SlotEvent, SlotState, next_state
from uptane.errors import (
    BadLength,
    EndlessDataAttack,
    InstallFailed,
    LimitExceeded,
    NoBootableImage,
    PartialBundleAttack,
    TrialNotConfirmed,
    UptaneError,
)
from uptane.identity import ImageIdentity
from uptane.limits import Limits
from uptane.metadata import TargetFile
from uptane.verify import ImageVerifier


@dataclass(frozen=True)
class ImageInfo:
    """What a slot holds: the signed filename, length, hashes and release counter."""

    filename: str
    length: int
    hashes: dict[str, str]
    release_counter: int | None = None

    @classmethod
    def from_target(cls, target: TargetFile) -> ImageInfo:
        return cls(target.path, target.length, dict(target.hashes), target.release_counter)

    def identity(self) -> ImageIdentity:
        """The image this slot holds (:mod:`uptane.identity`)."""
        return ImageIdentity(self.filename, self.length, self.hashes)

    def to_target(self) -> TargetFile:
        return TargetFile(
            self.filename, self.length, dict(self.hashes), release_counter=self.release_counter
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "length": self.length,
            "hashes": dict(self.hashes),
            "releaseCounter": self.release_counter,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageInfo:
        return cls(d["filename"], d["length"], dict(d["hashes"]), d["releaseCounter"])


#: outcomes of an install, as kept in ``InstallResult.outcome`` (the lifecycle's)
TRIAL, CONFIRMED, REJECTED, ABORTED, REVERTED = (
    Outcome.TRIAL,
    Outcome.CONFIRMED,
    Outcome.REJECTED,
    Outcome.ABORTED,
    Outcome.REVERTED,
)


#: reasons kept in the boot record are cut to this many characters, so the record fits
MAX_REASON = 200


@dataclass(frozen=True)
class InstallResult:
    """The last install's outcome, kept in the boot-control record for the next report.

    ``code`` and ``attack`` are those of the :mod:`uptane.errors` class that stopped it
    (0 and "" on success), so a version report can carry them as its attack indicator.
    """

    outcome: Outcome
    filename: str | None
    reason: str = ""
    code: int = 0
    attack: str = ""

    def __post_init__(self) -> None:
        # an outcome given as its string (as boot records keep it) becomes the Outcome
        object.__setattr__(self, "outcome", Outcome(self.outcome))

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "filename": self.filename,
            "reason": self.reason,
            "code": self.code,
            "attack": self.attack,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InstallResult:
        """The result a boot record keeps (the same fields since the first format);
        raises ValueError when ``d`` is not one."""
        try:
            outcome, filename = Outcome(d["outcome"]), d["filename"]
            reason, code, attack = d["reason"], d["code"], d["attack"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an install result: {e}") from None
        if (
            not (filename is None or isinstance(filename, str))
            or not isinstance(reason, str)
            or type(code) is not int
            or not isinstance(attack, str)
        ):
            raise ValueError("not an install result: a field has the wrong type")
        return cls(outcome, filename, reason, code, attack)

    @classmethod
    def of(
        cls, event: SlotEvent, filename: str | None, reason: str, error: UptaneError | None = None
    ) -> InstallResult:
        """The result ``event`` records (:data:`hardware.slot_lifecycle.OUTCOMES`), with the
        code and attack name of the ``error`` that caused it, if any."""
        if error is None:
            return cls(OUTCOMES[event], filename, reason[:MAX_REASON])
        return cls(OUTCOMES[event], filename, reason[:MAX_REASON], error.code, error.attack)


@dataclass(frozen=True)
class SlotStatus:
    """What the ECU is running and what is pending, for version reports and the bench tool.

    ``installed`` is the image in the booted slot (or in the active slot before the first
    :meth:`SlotManager.boot`); ``release_counter`` is its release counter; ``state`` is
    where the install stands in :mod:`hardware.slot_lifecycle`.
    """

    active: str
    booted: str | None
    installed: ImageInfo | None
    trial: str | None
    trial_image: ImageInfo | None
    attempts: int
    installing: bool
    last_result: InstallResult | None
    state: SlotState = SlotState.IDLE

    @property
    def release_counter(self) -> int | None:
        return self.installed.release_counter if self.installed else None


class SlotWriter:
    """Streams one image into a slot through a fixed buffer of ``chunk_size`` bytes.

    Feed it the same chunks you feed the :class:`ImageVerifier`; it refuses bytes past the
    announced length. Memory stays at one buffer whatever the image size.
    """

    def __init__(
        self, flash: Flash, slot: str, info: ImageInfo, chunk_size: int, start: int = 0
    ) -> None:
        self.flash = flash
        self.slot = slot
        self.info = info
        self._buf = bytearray(chunk_size)
        self._fill = 0
        self._flushed = start  # a resumed install continues after the bytes already held
        self.closed = False
        #: on a flash with erase blocks, the end of what this writer erased: each block is
        #: erased just before its first byte is programmed (``start`` is a block boundary);
        #: on the ideal flash nothing needs erasing
        self._erased = start if flash.erase_block else flash.slot_size

    @property
    def written(self) -> int:
        """Bytes accepted so far."""
        return self._flushed + self._fill

    @property
    def remaining(self) -> int:
        return self.info.length - self.written

    @property
    def flushed(self) -> int:
        """Bytes handed to the flash so far (``written`` minus the buffered tail)."""
        return self._flushed

    def sync(self) -> int:
        """Commit the slot (one write point) and return how many bytes are now durable:
        the checkpoint of a transfer that may resume after a reboot. The buffered tail is
        not written, so the slot's writes stay whole buffers. On a flash with erase blocks
        the checkpoint is the last block boundary: a resume erases from there, and never
        the block holding durable bytes it does not rewrite."""
        if self.closed:
            raise InstallFailed("the install was finished or aborted")
        self.flash.commit(self.slot)
        block = self.flash.erase_block
        return self._flushed - self._flushed % block if block else self._flushed

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Accept the next chunk of the image."""
        if self.closed:
            raise InstallFailed("the install was finished or aborted")
        if len(chunk) > self.remaining:
            raise EndlessDataAttack(
                f"image {self.info.filename!r} sent more than its {self.info.length} bytes"
            )
        view = memoryview(chunk)
        size = len(self._buf)
        while view:
            n = min(size - self._fill, len(view))
            self._buf[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == size:
                self._flush()

    def _flush(self) -> None:
        if self._fill:
            end = self._flushed + self._fill
            if end > self._erased:
                # erase before programming (one write point), up to the block holding end
                top = min(
                    self.flash.slot_size, -(-end // self.flash.erase_block) * self.flash.erase_block
                )
                self.flash.erase(self.slot, self._erased, top - self._erased)
                self._erased = top
            self.flash.write(self.slot, self._flushed, memoryview(self._buf)[: self._fill])
            self._flushed = end
            self._fill = 0


class SlotManager:
    """A/B slots with trial boots on one :class:`Flash` (see the module doc).

    ``limits`` gives the chunk size and the image cap (the constrained profile by default).
    ``verify_on_boot`` makes :meth:`boot` re-hash a slot before booting it, as a secure
    bootloader would; a slot that fails is never booted.
    """

    def __init__(
        self,
        flash: Flash,
        *,
        max_trial_boots: int = 3,
        limits: Limits | None = None,
        verify_on_boot: bool = True,
    ) -> None:
        if max_trial_boots < 1:
            raise ValueError("max_trial_boots must be at least 1")
        self.flash = flash
        self.max_trial_boots = max_trial_boots
        self.limits = limits or Limits.constrained()
        self.verify_on_boot = verify_on_boot
        self.booted: str | None = None
        self._writer: SlotWriter | None = None
        self._record = flash.read_boot() or BootRecord()

    # --- the lifecycle ----------------------------------------------------------------------

    @property
    def state(self) -> SlotState:
        """Where the install stands (:mod:`hardware.slot_lifecycle`): the boot record's
        trial field, the install in progress and the slot booted since the reset."""
        if self._writer is not None:
            return SlotState.INSTALLING
        trial = self._record.trial
        if trial is None:
            return SlotState.IDLE
        return SlotState.TRIAL_BOOTED if self.booted == trial else SlotState.TRIAL

    def _move(self, event: SlotEvent) -> SlotState:
        """The state ``event`` leads to; raises the lifecycle's error if it is not allowed."""
        return next_state(self.state, event)

    # --- reading the record -----------------------------------------------------------------

    def _image(self, slot: str | None, record: BootRecord | None = None) -> ImageInfo | None:
        if slot is None:
            return None
        images = (record or self._record).data.get("images", {})
        d = images.get(slot)
        return ImageInfo.from_dict(d) if d else None

    def _last(self) -> InstallResult | None:
        d = self._record.data.get("last")
        if not d:
            return None
        try:
            return InstallResult.from_dict(d)
        except ValueError:
            return None  # a record this code cannot read reports no last result

    def _write(
        self,
        *,
        active: str | None = None,
        trial: str | bool | None = False,
        attempts: int | None = None,
        images: dict[str, ImageInfo | None] | None = None,
        last: InstallResult | bool | None = False,
    ) -> None:
        """Write a new boot record changing the given fields (``False`` keeps a field)."""
        r = self._record
        data = dict(r.data)
        if images is not None:
            merged = dict(data.get("images", {}))
            for slot, info in images.items():
                merged[slot] = info.to_dict() if info else None
            data["images"] = merged
        if last is not False:
            data["last"] = last.to_dict() if isinstance(last, InstallResult) else None
        new_trial = r.trial if trial is False else trial
        assert new_trial is None or isinstance(new_trial, str)
        rec = BootRecord(
            active=active or r.active,
            trial=new_trial,
            attempts=r.attempts if attempts is None else attempts,
            confirmed=new_trial is None,
            data=data,
        )
        self._record = self.flash.write_boot(rec)

    # --- status -----------------------------------------------------------------------------

    def inactive_slot(self) -> str:
        """The slot an install writes to: the one that is not the confirmed (active) one."""
        return other_slot(self._record.active)

    def status(self) -> SlotStatus:
        r = self._record
        shown = self.booted if self.booted is not None else r.active
        return SlotStatus(
            active=r.active,
            booted=self.booted,
            installed=self._image(shown),
            trial=r.trial,
            trial_image=self._image(r.trial),
            attempts=r.attempts,
            installing=self._writer is not None,
            last_result=self._last(),
            state=self.state,
        )

    # --- install ----------------------------------------------------------------------------

    def _image_cap(self) -> int:
        """The largest image an install takes: the slot, or the Limits' image cap."""
        return min(self.flash.slot_size, self.limits.image_bytes)

    def begin_install(self, length: int, metadata: ImageInfo | TargetFile) -> SlotWriter:
        """Start writing an image of ``length`` bytes into the inactive slot.

        Refuses while another install or an unconfirmed trial is pending (a new bundle before
        the last one ended, §4.3), and images larger than the slot or the image cap. The
        per-ECU checks (§5.4.3.4: ECU id, hardware id, release counter against
        ``status().release_counter``) are the caller's, through
        :func:`uptane.verify.check_target_for_ecu`, before this is called.
        """
        info = ImageInfo.from_target(metadata) if isinstance(metadata, TargetFile) else metadata
        self._move(SlotEvent.BEGIN)
        if length != info.length:
            raise BadLength(f"install of {length} bytes, but the metadata says {info.length}")
        cap = self._image_cap()
        if length > cap:
            raise EndlessDataAttack(f"image of {length} bytes does not fit the {cap}-byte slot")
        slot = self.inactive_slot()
        self._check_record_fits(slot, info)
        if self._image(slot) is not None:
            # write point: the slot stops claiming its old image before a byte of it changes
            self._write(images={slot: None})
        self._writer = SlotWriter(self.flash, slot, info, self.limits.chunk_size)
        return self._writer

    def resume_install(self, metadata: ImageInfo | TargetFile, offset: int) -> SlotWriter:
        """Continue an install interrupted by a reboot: a writer for ``metadata`` that
        already holds the first ``offset`` bytes of the inactive slot.

        Refused (:class:`PartialBundleAttack`) unless the slot can still hold that partial
        image: no install or trial is pending and the boot record claims no image for the
        inactive slot (``begin_install`` cleared it and nothing was installed there since).
        The bytes themselves are the caller's to re-hash; :meth:`finish_install` verifies
        the whole slot again in any case. On a flash with erase blocks ``offset`` must be a
        block boundary (as :meth:`SlotWriter.sync` returns), else :class:`InstallFailed`.
        """
        info = ImageInfo.from_target(metadata) if isinstance(metadata, TargetFile) else metadata
        self._move(SlotEvent.RESUME)
        slot = self.inactive_slot()
        if self._image(slot) is not None:
            raise PartialBundleAttack(f"slot {slot} holds an installed image, not a partial one")
        cap = self._image_cap()
        if info.length > cap:
            raise EndlessDataAttack(
                f"image of {info.length} bytes does not fit the {cap}-byte slot"
            )
        if not 0 <= offset <= info.length:
            raise BadLength(f"resume at byte {offset} of a {info.length}-byte image")
        block = self.flash.erase_block
        if block and offset % block:
            # SlotWriter.sync() only names block boundaries: this offset came from
            # elsewhere, and resuming it would program bytes that are not erased
            raise InstallFailed(
                f"resume at byte {offset}, not on a {block}-byte erase block: start again at 0"
            )
        self._check_record_fits(slot, info)
        self._writer = SlotWriter(self.flash, slot, info, self.limits.chunk_size, start=offset)
        return self._writer

    def _check_record_fits(self, slot: str, info: ImageInfo) -> None:
        """Refuse, before anything is written, image info the boot record could not hold."""
        data = dict(self._record.data)
        data["images"] = {**data.get("images", {}), slot: info.to_dict()}
        worst = InstallResult(REVERTED, info.filename, "x" * MAX_REASON, 999, "x" * 32)
        data["last"] = worst.to_dict()
        probe = BootRecord(self._record.active, slot, 1 << 31, False, data)
        room = self.flash.boot_copy_size - 64  # header, CRC and slack
        if len(probe.to_payload()) > room:
            raise LimitExceeded(
                f"the metadata of {info.filename[:64]!r} does not fit the boot-control record"
            )

    def finish_install(self, writer: SlotWriter, verifier: ImageVerifier | None = None) -> None:
        """Verify and mark the written slot as the TRIAL to boot next.

        ``verifier`` is the caller's streaming verifier; its :meth:`finish` runs first. The
        slot is then committed, read back and verified again against the image's hashes,
        and only then is the boot flag switched, together with the image info, in one
        boot-control record. On any failure the result is recorded, the active slot stays,
        and the error is raised.
        """
        self._move(SlotEvent.FINISH)
        if writer is not self._writer or writer.closed:
            raise InstallFailed("this writer is not the install in progress")
        info = writer.info
        try:
            if verifier is not None:
                verifier.finish()
                vt = verifier.target
                if not vt.same_image(info):
                    raise InstallFailed("the verifier checked another image than was written")
            writer._flush()
            if writer.written != info.length:
                raise BadLength(
                    f"image {info.filename!r} is {writer.written} bytes, signed {info.length}"
                )
            self.flash.commit(writer.slot)
            self._verify_slot(writer.slot, info)
        except UptaneError as e:
            self._end_install(InstallResult.of(SlotEvent.REJECT, info.filename, e.message, e))
            raise
        writer.closed = True
        self._writer = None
        self._write(
            trial=writer.slot,
            attempts=0,
            images={writer.slot: info},
            last=InstallResult.of(
                SlotEvent.FINISH, info.filename, "installed, waiting for a trial boot"
            ),
        )

    def abort_install(self, reason: str = "install aborted") -> None:
        """Give up the install in progress; the active slot is untouched."""
        self._move(SlotEvent.ABORT)
        assert self._writer is not None
        error = InstallFailed(reason)
        self._end_install(
            InstallResult.of(SlotEvent.ABORT, self._writer.info.filename, reason, error)
        )

    def _end_install(self, result: InstallResult) -> None:
        if self._writer is not None:
            self._writer.closed = True
        self._writer = None
        self._write(last=result)

    def _verify_slot(self, slot: str, info: ImageInfo) -> None:
        """Hash what the slot holds against ``info``; raises BadHash/BadLength."""
        v = ImageVerifier(info.to_target(), self.limits)
        step = self.limits.chunk_size
        for off in range(0, info.length, step):
            v.update(self.flash.read(slot, off, min(step, info.length - off)))
        v.finish()

    def _slot_ok(self, slot: str) -> bool:
        info = self._image(slot)
        if info is None:
            return False
        if not self.verify_on_boot:
            return True
        try:
            self._verify_slot(slot, info)
        except UptaneError:
            return False
        return True

    # --- the bootloader -------------------------------------------------------------------

    def boot(self) -> str | None:
        """Simulate a reset: pick the slot to run and return it (None: no image yet).

        A trial slot is booted at most ``max_trial_boots`` times (each boot counted in the
        boot record before it starts); the boot after that reverts to the active slot and
        records the failure. Raises NoBootableImage if the active slot's image is broken.
        """
        self._move(SlotEvent.RESET)
        self._writer = None
        self.booted = None
        self._record = self.flash.read_boot() or BootRecord()
        if self.state is SlotState.TRIAL and self._boot_trial():
            return self.booted
        active = self._record.active
        if self._image(active) is None:
            return None  # a blank device: the bootloader waits for a first image
        if not self._slot_ok(active):
            raise NoBootableImage(f"active slot {active} does not hold its recorded image")
        self.booted = active
        return active

    def _boot_trial(self) -> bool:
        """TRIAL_BOOT (count the attempt, then run the trial slot) while attempts are left
        and the slot still holds its image; else REVERT to the active slot. True when the
        trial slot runs."""
        r = self._record
        assert r.trial is not None
        trial_info = self._image(r.trial)
        name = trial_info.filename if trial_info else None
        error: UptaneError | None = None
        if r.attempts >= self.max_trial_boots:
            error = TrialNotConfirmed(
                f"slot {r.trial} was booted {r.attempts} times without a confirm; "
                f"reverted to slot {r.active}"
            )
        elif not self._slot_ok(r.trial):
            error = NoBootableImage(f"slot {r.trial} does not match its image; reverted")
        if error is not None:
            self._move(SlotEvent.REVERT)
            result = InstallResult.of(SlotEvent.REVERT, name, error.message, error)
            self._write(trial=None, attempts=0, last=result)
            return False
        self._move(SlotEvent.TRIAL_BOOT)
        self._write(attempts=r.attempts + 1)
        self.booted = r.trial
        return True

    def confirm(self) -> None:
        """Make the booted trial slot permanent (one boot-record write)."""
        self._move(SlotEvent.CONFIRM)
        r = self._record
        info = self._image(r.trial)
        self._write(
            active=r.trial,
            trial=None,
            attempts=0,
            last=InstallResult.of(SlotEvent.CONFIRM, info.filename if info else None, "confirmed"),
        )
