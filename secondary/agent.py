"""The Secondary agent: the Secondary side of the link (a
:class:`hardware.protocol.SecondaryHandler`) over verification in :mod:`uptane`, A/B slots in
:mod:`hardware.slots` and atomic state in a :class:`storage.AtomicStore`.

It orchestrates; each concern has its own module (docs/secondary.md has the whole story):

- :mod:`secondary.verification`: partial (§5.4.4.1) or full (§5.4.4.2) verification, the
  strategy this agent consults for every metadata file, the latest verified targets and
  what becomes trusted with an image;
- :mod:`secondary.transfer`: the image into the inactive slot, slow retrieval (§5.4),
  checkpoints and resume after a reboot, and the install into the slot;
- :mod:`secondary.report`: the signed version report and the link's STATUS;
- :mod:`secondary.state`: the records of its atomic store, the latest time and the last
  error.

What it does with each request:

- ``GET_TIME_NONCE`` / ``PUT_TIME``: the latest time, moved only by a signed time token
  bound to this ECU's nonce when time server keys are provisioned
  (:mod:`secondary.timekeeping`); it never goes backwards, and every expiry is checked
  against it (§5.4.4.1 step 1, §5.4.3.1).
- ``PUT_METADATA``: what the strategy wants of it; the Director's targets run the
  verification. Files are bounded by the constrained :class:`~uptane.limits.Limits` (the
  endpoint refuses an over-long file before buffering it).
- ``PUT_IMAGE``: chunks of the image the verified metadata names for this ECU (§5.4.3.3
  length, §5.4.3.4 ECU and hardware id, release counter) stream into the inactive slot.
- ``INSTALL``: the §5.4.3.4 checks again, the Director targets that approved the image
  must still be unexpired against the latest verified time (else ``ExpiredMetadata``,
  and the received image is kept for a later INSTALL), then the install into the slot
  switches to a trial boot; with ``reboot_after_install`` the bootloader runs and, with
  auto-confirm, the new slot is confirmed once it booted (the slot lifecycle,
  :mod:`hardware.slot_lifecycle`).
- ``GET_REPORT``: the ECU version report (:mod:`secondary.report`).

Every refused request is remembered as the attack indicator of the next report; without
a link key, as an unauthenticated-peer event (docs/link-protocol.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from hardware.flash import Flash
from hardware.messages import Status
from hardware.protocol import EcuInfo, SecondaryEndpoint
from hardware.secure_link import LinkKey
from hardware.slot_lifecycle import SlotState
from hardware.slots import ImageInfo, InstallResult, SlotManager
from secondary import report as reports
from secondary.config import SecondaryConfig
from secondary.ecu import EcuSettings
from secondary.state import (
    LAST_ERROR,
    PENDING_TARGETS,
    TIME,
    TRANSFER,
    TRANSFER_AT,
    TRUSTED,
    AgentState,
    provision_state,
)
from secondary.timekeeping import EcuClock
from secondary.transfer import ImageReceiver, Transfer
from secondary.verification import Pending, Verification, Verified
from storage import LOCAL, AtomicStore, FileSystem
from uptane import roughtime as rt
from uptane.encryption import EncryptionPrivateKey
from uptane.errors import (
    ExpiredMetadata,
    MalformedInput,
    ProtocolViolation,
    TargetNotFound,
    UptaneError,
)
from uptane.keys import Signer
from uptane.limits import Limits
from uptane.metadata import DER, TargetFile
from uptane.trust import check_not_expired
from uptane.verify import check_target_for_ecu

log = logging.getLogger(__name__)


class SecondaryAgent:
    """One Secondary ECU: its identity, trusted state, slots and the link handler methods.

    Build it with :meth:`from_config` (from files) or directly; call :meth:`start` once (the
    bootloader), then serve :meth:`endpoint` on a transport.
    """

    def __init__(
        self,
        *,
        ecu_serial: str,
        hardware_id: str,
        key: Signer,
        store: AtomicStore,
        flash: Flash,
        mode: str = "partial",
        vehicle_id: str | None = None,
        encoding: str = DER,
        limits: Limits | None = None,
        director_name: str = "director",
        image_repo_name: str = "image",
        max_trial_boots: int = 3,
        auto_confirm: bool = True,
        reboot_after_install: bool = True,
        verify_on_boot: bool = True,
        checkpoint_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        time_keys: Sequence[rt.TimeServerKey] = (),
        time_policy: rt.TimePolicy | None = None,
        link_key: LinkKey | None = None,
        encryption_key: EncryptionPrivateKey | None = None,
    ) -> None:
        limits = limits or Limits.constrained()
        self.ecu = EcuSettings(
            ecu_serial, hardware_id, vehicle_id, encoding, limits, director_name, image_repo_name
        )
        self.key = key
        self.store = store
        self.flash = flash
        self.auto_confirm = auto_confirm
        self.reboot_after_install = reboot_after_install
        self.slots = SlotManager(
            flash, max_trial_boots=max_trial_boots, limits=limits, verify_on_boot=verify_on_boot
        )
        self.state = AgentState(store, limits)
        #: the latest verified time and the rules that move it (secondary.timekeeping)
        self.time = EcuClock(self.state, time_keys, time_policy)
        #: the link key every link message must be authenticated with (None: bench setups)
        self.link_key = link_key
        #: partial or full verification (§5.4.4.1, §5.4.4.2): see secondary.verification
        self.verification = Verification.for_mode(mode, self.ecu, self.state)
        self.receiver = ImageReceiver(
            self.slots,
            flash,
            self.state,
            checkpoint_bytes=checkpoint_bytes or 16 * limits.chunk_size,
            clock=clock,
            ecu_id=ecu_serial,
            encryption_key=encryption_key,  # issue 17: images encrypted for this ECU
        )
        self._pending: Pending | None = None

    # --- opening from files ---------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: SecondaryConfig, *, fs: FileSystem = LOCAL) -> SecondaryAgent:
        """The agent a :class:`secondary.config.SecondaryConfig` describes: its store and
        its flash write through ``fs``, one file system (the real disk by default; one
        device, so they share one power supply)."""
        key = cfg.open_key()
        return cls(
            ecu_serial=cfg.ecu_serial,
            hardware_id=cfg.hardware_id,
            key=key,
            store=AtomicStore(cfg.state_dir, fs=fs),
            flash=Flash(cfg.flash_dir, cfg.slot_size, fs=fs),
            mode=cfg.mode,
            vehicle_id=cfg.vehicle_id,
            encoding=cfg.encoding,
            limits=cfg.limits,
            director_name=cfg.director_name,
            image_repo_name=cfg.image_repo_name,
            max_trial_boots=cfg.max_trial_boots,
            auto_confirm=cfg.auto_confirm,
            reboot_after_install=cfg.reboot_after_install,
            checkpoint_bytes=cfg.checkpoint_bytes,
            time_keys=cfg.load_time_keys(),
            time_policy=cfg.time_policy,
            link_key=cfg.load_link_key(),
            encryption_key=cfg.load_encryption_key(),
        )

    #: the initial trusted state (§5.4.1): see :func:`secondary.state.provision_state`
    provision_state = staticmethod(provision_state)

    # --- what it is and holds -------------------------------------------------------------

    @property
    def ecu_serial(self) -> str:
        return self.ecu.ecu_serial

    @property
    def hardware_id(self) -> str:
        return self.ecu.hardware_id

    @property
    def limits(self) -> Limits:
        return self.ecu.limits

    @property
    def mode(self) -> str:
        """The verification strategy's name: "partial" or "full"."""
        return self.verification.mode

    @property
    def checkpoint_bytes(self) -> int:
        """Image bytes between two resume checkpoints."""
        return self.receiver.checkpoint_bytes

    @checkpoint_bytes.setter
    def checkpoint_bytes(self, value: int) -> None:
        self.receiver.checkpoint_bytes = value

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock (seconds) of the slow-retrieval check."""
        return self.receiver.clock

    @clock.setter
    def clock(self, value: Callable[[], float]) -> None:
        self.receiver.clock = value

    @property
    def latest_time(self) -> datetime:
        """The latest time this ECU was given (or provisioned with)."""
        return self.state.latest_time

    @property
    def last_error(self) -> dict[str, Any]:
        """``{"code", "attack", "indicator"}`` of the last refused request, or ``{}``."""
        return dict(self.state.last_error)

    @property
    def _trusted(self) -> dict[str, Any]:
        """The trusted record as RAM holds it (partial mode: without the Director targets)."""
        return self.verification.trusted

    @property
    def trusted_root(self) -> bytes:
        """The bytes of the Director root this ECU trusts now."""
        root: bytes = self.verification.trusted["director"]["root"]
        return root

    @property
    def trusted_targets(self) -> bytes | None:
        """The bytes of the Director targets this ECU trusts now (in partial mode read
        back from the store: RAM keeps only their rollback floor)."""
        return self.verification.trusted_targets()

    def _installed(self) -> ImageInfo | None:
        """The image that runs now (the booted slot's, from the boot record)."""
        return self.slots.status().installed

    def _installed_counter(self) -> int | None:
        return self.slots.status().release_counter

    def _note_error(self, error: UptaneError, *, authenticated: bool = True) -> None:
        self.state.note_error(error, authenticated=authenticated)

    # --- the bootloader -------------------------------------------------------------------

    def start(self) -> str | None:
        """Power-on: run the bootloader (trial boots, revert) and, with auto-confirm,
        confirm a trial slot that booted, then resume a checkpointed transfer. Returns the
        booted slot (None: blank)."""
        self.receiver.current = None  # a reset ends the transfer in RAM; its checkpoint stays
        before = self.slots.status().last_result
        booted = self.slots.boot()
        st = self.slots.status()
        if st.last_result is not None and st.last_result != before:
            log.warning("slot change: %s (%s)", st.last_result.outcome.value, st.last_result.reason)
        log.info("booted slot %s running %s", booted, _image_name(st.installed))
        if self.auto_confirm and self.slots.state is SlotState.TRIAL_BOOTED:
            self.slots.confirm()
            log.info("slot change: trial slot %s confirmed", booted)
        self._resume_transfer()
        return booted

    def _resume_transfer(self) -> None:
        """After a reboot: continue the transfer a checkpoint recorded, if its metadata
        still verifies (§5.4.4.1 or §5.4.4.2 again, now, against the trusted state and the
        image that runs) and the inactive slot still holds its partial image. Anything else
        discards the partial (the next transfer starts at 0)."""
        kept_error = self.state.last_error
        try:
            cp = self.receiver.stored_checkpoint()
            if cp is None:
                return
            for repository, version, root in cp.roots:
                self.verification.roots.setdefault(repository, {})[version] = root
            self._verified(self.verification.verify_again(cp.files, self._installed()))
            p = self._pending
            if p is None or not p.entry.same_image(cp.image):
                raise TargetNotFound(
                    f"the verified metadata no longer names {cp.image.path[:64]!r}"
                )
            x = self.receiver.resume(cp, p.entry)
        except UptaneError as e:
            log.warning("the partial image transfer is discarded: %s", e)
            self._pending = None
            self.verification.forget_received()
            self.receiver.discard_checkpoint()
            return
        finally:
            # verifying again is no new verdict: keep the last refusal's indicator
            self.state.restore_error(kept_error)
        log.info("resuming the transfer of %r at byte %d", x.filename, x.offset)

    # --- SecondaryHandler -----------------------------------------------------------------

    def hello_info(self) -> EcuInfo:
        size = min(self.flash.slot_size, self.limits.image_bytes)
        # the one codec it reads (and reports in): the Primary forwards that one
        mode = self.verification.mode
        return EcuInfo(self.ecu_serial, self.hardware_id, mode, size, (self.ecu.encoding,))

    def endpoint(self, *, max_frame: int = 1024) -> AgentEndpoint:
        """A link endpoint that serves this agent (authenticated with its link key)."""
        return AgentEndpoint(self, self.limits, max_frame=max_frame, link_key=self.link_key)

    def report(self, nonce: bytes) -> bytes:
        """§5.4.2.1.2: the signed ECU version report for ``nonce``."""
        return reports.version_report(
            self.ecu,
            self.key,
            self.slots.status(),
            latest_time=self.latest_time,
            nonce=nonce,
            attack=self.state.last_error.get("indicator"),
        )

    def status(self) -> Status:
        return reports.link_status(
            self.slots.status(),
            self.receiver.current,
            verified=self._pending is not None,
            attack=self.state.last_error.get("code"),
        )

    def time_nonce(self) -> bytes:
        """A fresh nonce for the next signed time token (secondary.timekeeping)."""
        return self.time.nonce()

    def put_time(self, time: int | bytes, token: bytes | None) -> None:
        """§5.4.2 step 5: the time; with time keys only a verified token moves the clock
        (secondary.timekeeping), without them the unsigned time, forward only."""
        self.time.receive(time, token)

    def put_metadata(self, repository: str, role: str, encoding: str, data: bytes) -> None:
        """One complete metadata file; the Director's targets trigger verification."""
        v = self.verification
        if not v.wants(repository, role):
            log.info(
                "metadata %s/%s (%d bytes): not used in %s mode",
                repository,
                role,
                len(data),
                v.mode,
            )
            return
        log.info("metadata %s/%s received (%s, %d bytes)", repository, role, encoding, len(data))
        if role != "map":
            self.ecu.check_encoding(encoding)
            if repository not in (self.ecu.director_name, self.ecu.image_repo_name):
                raise MalformedInput(f"unknown repository {repository[:64]!r}")
            if role == "root":
                v.add_root(repository, data)
                return
        if not v.receive(repository, role, data):
            return  # kept until the Director's targets arrive
        try:
            verdict = v.verify(data, self._installed())
        except UptaneError:
            self._set_pending(None)
            raise
        self._verified(verdict)

    def _verified(self, verdict: Verified) -> None:
        """Act on a verification that passed: a new image is awaited, or the metadata is
        trusted at once."""
        self._set_pending(verdict.pending)
        if verdict.trust is not None:
            self.verification.trust(verdict.trust)
        p = verdict.pending
        if p is None:
            log.info("metadata verified: no new image for this ECU (trusted now)")
        else:
            log.info(
                "metadata verified: new image %s (%d bytes) for this ECU",
                p.entry.path,
                p.entry.length,
            )
        self.state.clear_error()

    def _set_pending(self, pending: Pending | None) -> None:
        """Replace the verified-but-not-installed metadata. A transfer in progress survives
        only if the new metadata names the very same image (a Primary that retries its
        cycle resumes the transfer instead of starting again)."""
        x = self.receiver.current
        if x is not None and (pending is None or not pending.entry.same_image(x.entry)):
            self.receiver.abort("the Director's metadata no longer names this image")
        self._pending = pending

    # --- image transfer and install -------------------------------------------------------

    def put_image_chunk(self, filename: str, total: int, offset: int, chunk: bytes) -> None:
        """The next chunk, streamed into the inactive slot through the image verifier."""
        if offset == 0:
            self.receiver.abort("a new image transfer started")
            self._begin(filename, total)
        x = self.receiver.current
        if x is None or not x.continues(filename, total, offset):
            raise ProtocolViolation(f"image {filename[:64]!r}: no transfer at offset {offset}")
        self.receiver.write(x, chunk)
        p = self._pending
        if p is not None:
            self.receiver.checkpoint_due(x, p.entry, p.source)

    def _begin(self, filename: str, total: int) -> Transfer:
        """Start receiving ``filename``: the image the verified metadata names for this
        ECU, of its signed length, fit for this ECU now."""
        p = self._pending
        if p is None or p.entry.path != filename:
            listed = self.verification.listed(filename, p)
            if listed is not None:
                # §5.4.3.4: the Director lists it, but not for this ECU (or this hardware)
                self._check_for_ecu(listed)
            raise TargetNotFound(
                f"the Director's verified targets name no new image {filename[:64]!r} "
                f"for ECU {self.ecu_serial!r}"
            )
        # §5.4.3.4 against the image that runs now
        self._check_for_ecu(p.entry)
        # §5.4.3.3: never take more than the signed length (of what crosses the link)
        x = self.receiver.begin(p.entry, filename, total)
        log.info("receiving image %s (%d bytes) into the inactive slot", filename, total)
        return x

    def _check_for_ecu(self, entry: TargetFile) -> None:
        """§5.4.3.4: ECU id, hardware id, release counter against the image that runs."""
        check_target_for_ecu(entry, self.ecu_serial, self.hardware_id, self._installed_counter())

    def install(self, filename: str | None) -> None:
        """§5.4.3.4 then A/B install of the image received; trusted metadata moves with it."""
        x = self.receiver.ready(filename)
        p = self._pending
        assert p is not None and p.entry.path == x.filename
        # issue 21: the approval must still hold now, against the latest verified time
        # (a long transfer may outlast it); the received image stays for a later INSTALL
        # once fresh metadata names it again
        self._check_unexpired(p)
        try:
            # §5.4.3.4 again: the slot may have changed since the metadata was checked
            self._check_for_ecu(p.entry)
            trusted = self.verification.trusted_at_install(p)
        except UptaneError:
            self.receiver.abort("the image no longer fits this ECU")
            raise
        # exact length, every hash, read-back, then the switch to a trial boot
        self.receiver.install(x)
        self._pending = None
        self.verification.installed(p, trusted)
        del trusted
        self.state.clear_error()
        log.info(
            "installed %s: slot change: slot %s on trial", x.filename, self.slots.status().trial
        )
        if self.reboot_after_install:
            self.start()

    def _check_unexpired(self, p: Pending) -> None:
        """The Director targets that approved ``p``'s image, not expired at the latest
        verified time (the freeze check of §5.4.4.6 step 5, again at INSTALL)."""
        if p.approved_by is None:
            return
        try:
            check_not_expired(
                p.approved_by,
                self.latest_time,
                role="targets",
                repository=self.ecu.director_name,
            )
        except ExpiredMetadata as e:
            raise ExpiredMetadata(f"at INSTALL: {e.message}", repository=e.repository) from None

    # --- for the bench tool and tests ----------------------------------------------------

    def last_result(self) -> InstallResult | None:
        return self.slots.status().last_result


def _image_name(info: ImageInfo | None) -> str:
    return info.filename if info is not None and info.filename else "nothing"


class AgentEndpoint(SecondaryEndpoint):
    """The link endpoint for a :class:`SecondaryAgent`: every refused request, including
    those the endpoint itself refuses (an over-long metadata file, a bad offset), is
    remembered as the attack indicator of the next report."""

    handler: SecondaryAgent

    def handle(self, msg: Any) -> Any:
        try:
            return super().handle(msg)
        except UptaneError as e:
            self.handler._note_error(e, authenticated=self.authenticated)
            who = "" if self.authenticated else " (unauthenticated peer)"
            log.warning("refused %s%s: %s: %s", type(msg).__name__, who, e.attack, e.message)
            raise
        except Exception:  # answered as code 1 "error" by the endpoint, which serves on
            log.exception("%s failed inside the agent (a bug)", type(msg).__name__)
            raise


__all__ = [
    "LAST_ERROR",
    "PENDING_TARGETS",
    "TIME",
    "TRANSFER",
    "TRANSFER_AT",
    "TRUSTED",
    "AgentEndpoint",
    "SecondaryAgent",
]
