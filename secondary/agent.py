"""The Secondary agent: the Secondary side of the link (a
:class:`hardware.protocol.SecondaryHandler`) over verification in :mod:`uptane`, A/B slots in
:mod:`hardware.slots` and atomic state in :mod:`hardware.store`.

What it does with each request (docs/secondary.md has the whole story):

- ``PUT_TIME``: the latest time, which never goes backwards; every expiry is checked against
  it (§5.4.4.1 step 1, §5.4.3.1).
- ``PUT_METADATA``: partial verification (§5.4.4.1) runs when the Director's targets
  arrives; Director root versions sent before it are applied first (key rotation). In
  full-verification mode every role of both repositories and the map file are collected and
  full verification (§5.4.4.2) runs for this ECU's image when the Director's targets
  arrives. Files are bounded by the constrained :class:`~uptane.limits.Limits` (the
  endpoint refuses an over-long file before buffering it).
- ``PUT_IMAGE``: chunks stream straight into the inactive slot through
  :class:`~uptane.verify.ImageVerifier` (bytes past the signed length are refused before
  they are written); memory is one chunk buffer and the hash states. A transfer interrupted
  by the link resumes at the acknowledged offset. Every ``checkpoint_bytes`` the slot is
  committed and the transfer's identity and durable offset are stored, so after a reboot
  the metadata is verified again, the hash states are rebuilt from the slot, and the
  transfer resumes at that offset.
- Slow retrieval (§5.4, every ECU SHALL monitor its download speed): the chunks of an
  image transfer go through :class:`uptane.speed.SpeedMonitor` with the agent's
  monotonic clock. Once a window of ``speed_window`` seconds averages less than
  ``min_bytes_per_second`` (the Limits profile, overridable in the TOML ``[link]``
  table), the chunk is refused with :class:`~uptane.errors.SlowRetrievalAttack` (the
  ERROR over the link names ``slow-retrieval``, and so does the next report). Nothing is
  installed; the bytes already received stay as a partial the next cycle resumes. Only
  an active transfer is measured: a pause longer than ``speed_window`` with no chunk (the
  Primary between two cycles, a link that dropped) starts a fresh window at the next
  chunk (a stall is the link timeouts' business, not a slow transfer).
- ``INSTALL``: the §5.4.3.4 checks again (ECU id, hardware id, release counter against the
  image that runs now), then :meth:`~hardware.slots.SlotManager.finish_install` (exact
  length, every hash, read-back) switches to a trial boot; with ``reboot_after_install`` the
  bootloader runs and, with auto-confirm, the new slot is confirmed once it booted.
- ``GET_REPORT``: an ECU version report (:mod:`uptane.manifest`) signed with the ECU key,
  carrying the nonce, the latest time, the image in the booted slot with its release
  counter (from the boot record, so it always describes the bytes that boot), the attack
  indicator of the last error and the last install result.

New Director metadata that names a new image for this ECU becomes trusted *with* that
image: if the image is refused, the previous targets stay trusted and the previous image
stays installed. Metadata that names nothing new is trusted (and stored) at once. The
trusted metadata is one atomic record in the store, so root and targets change together.

Memory in partial mode (bench figure 3b): DER Director targets are checked one entry at a
time (:mod:`uptane.encoding.der_targets`) and RAM keeps only their rollback floor (version,
expiry, this ECU's entry). Their bytes live in the store only: verified targets that name a
new image are written to PENDING_TARGETS as soon as they verify, so the message is not held
while the image streams, and move into the trusted record at install.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from hardware.flash import Flash, PowerCut
from hardware.messages import Status
from hardware.protocol import EcuInfo, SecondaryEndpoint
from hardware.slots import InstallResult, SlotManager, SlotWriter
from hardware.store import AtomicStore
from secondary.config import SecondaryConfig
from uptane.encoding import cbor
from uptane.errors import (
    BadLength,
    EndlessDataAttack,
    LinkError,
    MalformedInput,
    ProtocolViolation,
    SlowRetrievalAttack,
    TargetNotFound,
    UptaneError,
)
from uptane.identity import ImageIdentity
from uptane.keys import PrivateKey
from uptane.limits import Limits
from uptane.manifest import EcuVersionReport, InstalledImage, SignedManifest, attack_indicator
from uptane.metadata import (
    DER,
    JSON,
    MapFile,
    Mapping,
    TargetFile,
)
from uptane.partial import PartialVerifier, listed_target
from uptane.securetime import next_latest_time
from uptane.speed import SpeedMonitor
from uptane.trust import RepositoryTrust, peek_version
from uptane.verify import (
    NO_NEW_TARGETS,
    ImageVerifier,
    VehicleContext,
    check_target_for_ecu,
    full_verification,
)

log = logging.getLogger(__name__)

#: names of the agent's records in its AtomicStore
TRUSTED = "trusted"  # CBOR {"director": {role: bytes}, "image": {role: bytes}, "map": bytes}
TIME = "time"  # JSON {"latest": seconds since the epoch}
LAST_ERROR = "last-error"  # JSON {"code", "attack", "indicator"} or {} after a success
#: an image transfer to resume after a reboot: TRANSFER (CBOR) is written at its first
#: checkpoint: {"id", "filename", "total", "slot", "hashes", "files", "roots"}, where files
#: [[repository, role, bytes]] and roots [[repository, version, bytes]] are the metadata
#: it was verified from; TRANSFER_AT (JSON {"id", "offset"}) at every checkpoint. Only
#: matching ids count, so a cut between the two writes leaves nothing to resume.
TRANSFER = "transfer"
TRANSFER_AT = "transfer-at"
#: partial verification: the exact bytes of verified Director targets that name a new image
#: for this ECU, written when they verify, so that nothing holds the message while the image
#: streams; they join TRUSTED when the image installs. A partial-mode TRANSFER record names
#: no files: its resume verifies this record again.
PENDING_TARGETS = "pending-targets"

#: errors about the conversation itself, not about what was sent: not an attack indicator
_NOT_ATTACKS = (ProtocolViolation, LinkError)

#: the image a blank ECU reports: zero bytes
_EMPTY = InstalledImage("", 0, {"sha256": sha256(b"").hexdigest()})


@dataclass
class _Transfer:
    """An image being received into the inactive slot."""

    filename: str
    total: int
    verifier: ImageVerifier
    writer: SlotWriter
    #: §5.4 slow retrieval: the speed of this transfer's chunks over the link
    speed: SpeedMonitor
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    saved: int = 0  # the offset of the last checkpoint (0: none stored)

    @property
    def offset(self) -> int:
        return self.writer.written


@dataclass
class _Pending:
    """Verified metadata naming a new image for this ECU: trusted once the image installs.
    In partial mode ``trusted["director"]`` has no ``targets``: they are in the store
    (PENDING_TARGETS) until the install."""

    entry: TargetFile
    trusted: dict[str, Any]
    #: what it was verified from, to verify again after a reboot (see TRANSFER)
    source: dict[str, list[Any]] = field(default_factory=dict)
    #: the partial verifier's state after verifying (root, rollback floor, raw root), reused
    #: at install instead of verifying the same Director targets again (bench fig 3b); None
    #: after a reboot, when install rebuilds it from the trusted files
    verified: tuple[Any, Any, dict[str, bytes]] | None = None
    #: partial mode: SHA-256 of the PENDING_TARGETS bytes verified, checked again when they
    #: are read back at install
    targets_sha256: bytes | None = None


class _MemorySource:
    """The metadata files the Primary sent, served to :class:`RepositoryTrust.refresh`."""

    def __init__(self, files: dict[str, bytes], roots: dict[int, bytes]) -> None:
        self.files = files
        self.roots = roots

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None:
        data = self.roots.get(version) if role == "root" and version else self.files.get(role)
        if data is not None and len(data) > max_bytes:
            raise EndlessDataAttack(f"{role}: more than {max_bytes} bytes", role=role)
        return data


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
        key: PrivateKey,
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
    ) -> None:
        if mode not in ("partial", "full"):
            raise ValueError(f"unknown verification mode {mode!r}")
        if mode == "full" and vehicle_id is None:
            raise ValueError("full verification needs the vehicle id")
        self.ecu_serial = ecu_serial
        self.hardware_id = hardware_id
        self.key = key
        self.store = store
        self.flash = flash
        self.mode = mode
        self.vehicle_id = vehicle_id
        self.encoding = encoding
        self.limits = limits or Limits.constrained()
        self.director_name = director_name
        self.image_repo_name = image_repo_name
        self.auto_confirm = auto_confirm
        self.reboot_after_install = reboot_after_install
        #: commit the slot and store the transfer's offset every this many image bytes
        self.checkpoint_bytes = checkpoint_bytes or 16 * self.limits.chunk_size
        #: a monotonic clock in seconds, read for the slow-retrieval check only
        self.clock = clock
        self.slots = SlotManager(
            flash,
            max_trial_boots=max_trial_boots,
            limits=self.limits,
            verify_on_boot=verify_on_boot,
        )
        self._xfer: _Transfer | None = None
        self._pending: _Pending | None = None
        self._received: dict[tuple[str, str], bytes] = {}
        self._roots: dict[str, dict[int, bytes]] = {}
        self._latest = self._load_time()
        self._last_error: dict[str, Any] = self._load_json(LAST_ERROR) or {}
        self._trusted = self._load_trusted()
        self._targets_stored = False
        self._partial: PartialVerifier | None = None
        if mode == "partial":
            self._partial = PartialVerifier.load(
                self._trusted["director"],
                ecu_serial,
                hardware_id,
                self.limits,
                encoding=encoding,
                vehicle_id=vehicle_id,
            )
            self._trusted = self._in_ram(self._trusted)

    # --- opening from files ---------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: SecondaryConfig, *, fault: PowerCut | None = None) -> SecondaryAgent:
        """The agent a :class:`secondary.config.SecondaryConfig` describes (file-backed
        flash and store; ``fault`` is a shared :class:`hardware.flash.PowerCut` for tests)."""
        key = PrivateKey.from_pem(cfg.key_file.read_bytes())
        return cls(
            ecu_serial=cfg.ecu_serial,
            hardware_id=cfg.hardware_id,
            key=key,
            store=AtomicStore(cfg.state_dir, fault=fault),
            flash=Flash(cfg.flash_dir, cfg.slot_size, fault=fault),
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
        )

    @staticmethod
    def provision_state(
        store: AtomicStore,
        director_root: bytes,
        *,
        targets: bytes | None = None,
        image_root: bytes | None = None,
        map_file: bytes | None = None,
        time: int | None = None,
    ) -> None:
        """Write the initial trusted state (§5.4.1): the Director root (and its initial
        targets), for full verification the Image repository root and the map file, and
        the provisioned time. The caller checks them first (see secondary.cli)."""
        director = {"root": director_root}
        if targets is not None:
            director["targets"] = targets
        record: dict[str, Any] = {"director": director}
        if image_root is not None:
            record["image"] = {"root": image_root}
        if map_file is not None:
            record["map"] = map_file
        store.write(TRUSTED, cbor.dumps(record))
        if time is not None:
            store.write_json(TIME, {"latest": int(time)})

    # --- persisted state ------------------------------------------------------------------

    def _store_cap(self) -> int:
        return 4 * sum(self.limits.role_bytes.values()) + 4 * self.limits.map_file_bytes

    def _load_json(self, name: str) -> Any:
        try:
            return self.store.read_json(name, self.limits)
        except UptaneError as e:
            log.error("stored %s is unreadable (%s); ignored", name, e)
            return None

    def _load_time(self) -> int:
        d = self._load_json(TIME)
        latest = d.get("latest") if isinstance(d, dict) else None
        return latest if isinstance(latest, int) and not isinstance(latest, bool) else 0

    def _load_trusted(self) -> dict[str, Any]:
        data = self.store.read(TRUSTED, max_bytes=self._store_cap())
        if data is None:
            raise MalformedInput("this ECU is not provisioned: no trusted Director root")
        rec = cbor.loads(data, self.limits, cap=self._store_cap(), max_items=64, max_total=256)
        if not isinstance(rec, dict) or not isinstance(rec.get("director"), dict):
            raise MalformedInput("the trusted-metadata record is damaged")
        return rec

    def _save_trusted(self, rec: dict[str, Any]) -> None:
        self.store.write(TRUSTED, cbor.dumps(rec))
        self._trusted = self._in_ram(rec)

    def _in_ram(self, rec: dict[str, Any]) -> dict[str, Any]:
        """What of the trusted record stays in RAM: in partial mode not the Director
        targets (up to the role cap), which only the store keeps; the partial verifier
        keeps their rollback floor and :attr:`trusted_targets` reads them back."""
        self._targets_stored = self.mode == "partial" and "targets" in rec["director"]
        if not self._targets_stored:
            return rec
        director = {k: v for k, v in rec["director"].items() if k != "targets"}
        if self._partial is not None:
            self._partial.raw.pop("targets", None)
        return dict(rec, director=director)

    def _note_error(self, error: UptaneError) -> None:
        """Remember ``error`` as the attack indicator of the next report (persisted)."""
        if isinstance(error, _NOT_ATTACKS):
            return
        self._last_error = {
            "code": error.code,
            "attack": error.attack,
            "indicator": attack_indicator(error)[: self.limits.max_string // 2],
        }
        try:
            self.store.write_json(LAST_ERROR, self._last_error)
        except UptaneError as e:  # pragma: no cover - the store refuses nothing this small
            log.error("cannot store the last error: %s", e)

    def _clear_error(self) -> None:
        if self._last_error:
            self._last_error = {}
            self.store.write_json(LAST_ERROR, {})

    @property
    def latest_time(self) -> datetime:
        """The latest time this ECU was given (or provisioned with)."""
        return datetime.fromtimestamp(self._latest, UTC)

    @property
    def last_error(self) -> dict[str, Any]:
        """``{"code", "attack", "indicator"}`` of the last refused request, or ``{}``."""
        return dict(self._last_error)

    @property
    def trusted_root(self) -> bytes:
        """The bytes of the Director root this ECU trusts now."""
        root: bytes = self._trusted["director"]["root"]
        return root

    @property
    def trusted_targets(self) -> bytes | None:
        """The bytes of the Director targets this ECU trusts now (in partial mode read
        back from the store: RAM keeps only their rollback floor)."""
        if self._targets_stored:
            targets: bytes | None = self._load_trusted()["director"].get("targets")
            return targets
        return self._trusted["director"].get("targets")

    # --- the bootloader -------------------------------------------------------------------

    def start(self) -> str | None:
        """Power-on: run the bootloader (trial boots, revert) and, with auto-confirm,
        confirm a trial slot that booted. Returns the booted slot (None: blank)."""
        booted = self.slots.boot()
        st = self.slots.status()
        if self.auto_confirm and st.trial is not None and booted == st.trial:
            self.slots.confirm()
        self._resume_transfer()
        return booted

    # --- SecondaryHandler -----------------------------------------------------------------

    def hello_info(self) -> EcuInfo:
        size = min(self.flash.slot_size, self.limits.image_bytes)
        return EcuInfo(self.ecu_serial, self.hardware_id, self.mode, size)

    def endpoint(self, *, max_frame: int = 1024) -> AgentEndpoint:
        """A link endpoint that serves this agent."""
        return AgentEndpoint(self, self.limits, max_frame=max_frame)

    def report(self, nonce: bytes) -> bytes:
        """§5.4.2.1.2: the signed ECU version report for ``nonce``."""
        if not nonce:
            raise MalformedInput("GET_REPORT needs a non-empty nonce")
        st = self.slots.status()
        installed = (
            InstalledImage(st.installed.filename, st.installed.length, dict(st.installed.hashes))
            if st.installed is not None
            else _EMPTY
        )
        extra: dict[str, Any] = {"hardware_id": self.hardware_id}
        booted = st.booted or (st.active if st.installed is not None else None)
        if booted is not None:
            extra["slot"] = booted
        if st.trial is not None:
            extra["trial_slot"] = st.trial
        last = st.last_result
        if last is not None:
            extra["install_result"] = {
                "outcome": last.outcome,
                "filename": last.filename or "",
                "code": last.code,
                "attack": last.attack,
            }
        body = EcuVersionReport(
            ecu_id=self.ecu_serial,
            installed=installed,
            latest_time=self.latest_time,
            nonce=bytes(nonce),
            release_counter=st.release_counter,
            attack=self._last_error.get("indicator") or None,
            unrecognized=extra,
        )
        signed = SignedManifest(body, encoding=self.encoding)
        signed.sign(self.key)
        return signed.to_bytes()

    def put_time(self, time: int | bytes, token: bytes | None) -> None:
        """The Primary's time; kept only if it is later than the latest one (§5.4.2 step 5).
        A signed time token is not checked yet (no time authority is configured)."""
        try:
            latest = next_latest_time(self._latest, time)
        except MalformedInput as e:
            raise MalformedInput(f"PUT_TIME: {e.message}") from None
        if latest != self._latest:
            self.store.write_json(TIME, {"latest": latest})
            self._latest = latest

    def put_metadata(self, repository: str, role: str, encoding: str, data: bytes) -> None:
        """One complete metadata file; the Director's targets triggers verification."""
        if self.mode == "partial" and (role == "map" or repository != self.director_name):
            return  # a partial-verification Secondary needs only the Director's (§5.4.4.1)
        if role == "map":
            self._keep(("map", "map"), data)
            return
        if encoding != self.encoding:
            raise MalformedInput(f"this ECU reads {self.encoding} metadata, not {encoding!r}")
        if repository not in (self.director_name, self.image_repo_name):
            raise MalformedInput(f"unknown repository {repository[:64]!r}")
        if role == "root":
            roots = self._roots.setdefault(repository, {})
            if len(roots) >= self.limits.max_root_rotations:
                raise EndlessDataAttack("too many root versions sent")
            roots[peek_version(data, self.limits, encoding=self.encoding)] = bytes(data)
            return
        if self.mode == "partial":
            if role == "targets":
                self._verify_partial(data)
            return  # the Director's snapshot and timestamp: not needed (§5.4.4.1)
        self._keep((repository, role), data)
        if repository == self.director_name and role == "targets":
            self._verify_full()

    def _keep(self, key: tuple[str, str], data: bytes) -> None:
        if key not in self._received and len(self._received) >= 2 * self.limits.max_roles + 1:
            raise EndlessDataAttack("too many metadata files sent")
        self._received[key] = bytes(data)

    # --- verification -----------------------------------------------------------------------

    def _installed_counter(self) -> int | None:
        return self.slots.status().release_counter

    def _is_installed(self, entry: TargetFile) -> bool:
        return entry.same_image(self.slots.status().installed)

    def _verify_partial(self, targets: bytes, *, stored: bool = False) -> None:
        """§5.4.4.1 through :class:`PartialVerifier`; on failure nothing changes. Verified
        targets that name a new image are written to PENDING_TARGETS at once (``stored``:
        they are that record already, read back by a resume) and not kept in RAM."""
        pv = self._partial
        assert pv is not None
        roots = [r for _, r in sorted(self._roots.pop(self.director_name, {}).items())]
        saved = (pv.root, pv.targets, dict(pv.raw))
        try:
            entry = pv.verify(
                targets,
                self.latest_time,
                root_updates=roots,
                installed_release_counter=self._installed_counter(),
            )
        except UptaneError:
            pv.root, pv.targets, pv.raw = saved
            self._set_pending(None)
            raise
        # the verifier keeps only the rollback floor; the bytes go to the store below
        director = dict(pv.raw)
        director.pop("targets", None)
        pv.raw.pop("targets", None)
        if entry is not None and not self._is_installed(entry):
            # the new metadata is trusted together with the image it names
            if not stored:
                self.store.write(PENDING_TARGETS, targets)
            verified = (pv.root, pv.targets, dict(director))
            pv.root, pv.targets, pv.raw = saved
            source: dict[str, list[Any]] = {
                "files": [],  # the Director targets are the PENDING_TARGETS record
                "roots": [[self.director_name, i, r] for i, r in enumerate(roots)],
            }
            pending = _Pending(
                entry,
                dict(self._trusted, director=director),
                source,
                verified,
                sha256(targets).digest(),
            )
            self._set_pending(pending)
        else:
            self._set_pending(None)
            self._save_trusted(dict(self._trusted, director=dict(director, targets=targets)))
        self._clear_error()

    def _set_pending(self, pending: _Pending | None) -> None:
        """Replace the verified-but-not-installed metadata. A transfer in progress survives
        only if the new metadata names the very same image (a Primary that retries its
        cycle resumes the transfer instead of starting again)."""
        x = self._xfer
        if x is not None and (pending is None or not pending.entry.same_image(x.verifier.target)):
            self._abort_transfer("the Director's metadata no longer names this image")
        self._pending = pending

    def _verify_full(self) -> None:
        """§5.4.4.2 for this ECU's image (``only_ecu``), from what the Primary sent."""
        assert self.vehicle_id is not None
        received, self._received = self._received, {}
        roots = {name: self._roots.pop(name, {}) for name in (self.director_name,)}
        roots[self.image_repo_name] = self._roots.pop(self.image_repo_name, {})
        stored_map = self._trusted.get("map")
        map_bytes = received.get(("map", "map"), stored_map)
        if map_bytes is None:
            # the Uptane default (§5.2.6): every image needs both repositories
            both = [self.director_name, self.image_repo_name]
            map_file = MapFile({n: [] for n in both}, [Mapping(["*"], both, 2, True)])
        else:
            self.limits.check_bytes("map file", len(map_bytes), self.limits.map_file_bytes)
            map_file = MapFile.from_json(map_bytes, self.limits)
        trusts = {}
        for name, is_director in ((self.director_name, True), (self.image_repo_name, False)):
            files = self._trusted.get("director" if is_director else "image")
            if not files:
                raise MalformedInput(f"no trusted root for repository {name!r}")
            trusts[name] = RepositoryTrust.load(
                name,
                files,
                self.limits,
                encoding=self.encoding,
                director=is_director,
                vehicle_id=self.vehicle_id if is_director else None,
            )
        sources = {
            name: _MemorySource(
                {role: data for (repo, role), data in received.items() if repo == name},
                roots[name],
            )
            for name in trusts
        }
        st = self.slots.status()
        vehicle = VehicleContext(
            self.vehicle_id,
            "",
            {self.ecu_serial: self.hardware_id},
            {self.ecu_serial: st.release_counter} if st.release_counter is not None else {},
            {self.ecu_serial: st.installed.to_target()} if st.installed is not None else {},
        )
        try:
            result = full_verification(
                trusts[self.director_name],
                trusts[self.image_repo_name],
                map_file,
                sources,
                self.latest_time,
                vehicle,
                self.limits,
                only_ecu=self.ecu_serial,
            )
        except UptaneError:
            self._set_pending(None)
            raise
        new = dict(self._trusted)
        new["director"] = dict(trusts[self.director_name].raw)
        new["image"] = dict(trusts[self.image_repo_name].raw)
        if map_bytes is not None:
            new["map"] = map_bytes
        approved = result.for_ecu(self.ecu_serial)
        if approved is not None and not self._is_installed(approved.director_target):
            source = {
                "files": [[repo, role, data] for (repo, role), data in received.items()],
                "roots": [[n, v, d] for n, vs in roots.items() for v, d in vs.items()],
            }
            self._set_pending(_Pending(approved.director_target, new, source))
        else:
            self._set_pending(None)
            if result.stopped_early not in (None, NO_NEW_TARGETS) or approved is None:
                log.info("full verification: %s", result.stopped_early or "nothing for this ECU")
            self._save_trusted(new)
        self._clear_error()

    # --- image transfer and install ---------------------------------------------------------

    def _pending_targets(self) -> bytes | None:
        """Partial mode: the verified Director targets waiting for their image (store)."""
        return self.store.read(PENDING_TARGETS, max_bytes=self.limits.bytes_for_role("targets"))

    def _listed(self, filename: str) -> TargetFile | None:
        """The entry for ``filename`` in the latest verified Director targets (pending or
        trusted), if they list it."""
        p = self._pending
        if p is None:
            raw = self.trusted_targets
        elif "targets" in p.trusted["director"]:
            raw = p.trusted["director"]["targets"]
        else:
            raw = self._pending_targets()
        if raw is None:
            return None
        return listed_target(raw, filename, self.limits, encoding=self.encoding)

    def _abort_transfer(self, reason: str) -> None:
        x = self._xfer
        if x is not None:
            self._xfer = None
            self._forget_transfer(x)
            self.slots.abort_install(reason)

    def _forget_transfer(self, x: _Transfer) -> None:
        """Drop the stored checkpoint of ``x`` (before its slot is reused or installed)."""
        if x.saved:
            self.store.delete(TRANSFER_AT)

    def _checkpoint(self, x: _Transfer, p: _Pending) -> None:
        """Make the bytes received so far durable and record where to resume: the slot is
        committed before the record that claims its bytes is written."""
        durable = x.writer.sync()
        if not x.saved:
            rec = {
                "id": x.id,
                "filename": x.filename,
                "total": x.total,
                "slot": x.writer.slot,
                "hashes": dict(p.entry.hashes),
                **p.source,
            }
            self.store.write(TRANSFER, cbor.dumps(rec))
        self.store.write_json(TRANSFER_AT, {"id": x.id, "offset": durable})
        x.saved = durable

    def _transfer_cap(self) -> tuple[int, int]:
        """Byte and item caps of the TRANSFER record: every metadata file and root sent."""
        lim = self.limits
        files = 2 * lim.max_roles + 2
        roots = 2 * lim.max_root_rotations
        biggest = max(lim.delegated_targets_bytes, *lim.role_bytes.values())
        size = files * biggest + roots * lim.bytes_for_role("root") + lim.map_file_bytes
        return size + 4096, files + roots + 16

    def _resume_transfer(self) -> None:
        """After a reboot: continue the transfer a checkpoint recorded, if its metadata
        still verifies (§5.4.4.1 or §5.4.4.2 again, now, against the trusted state and the
        image that runs) and the inactive slot still holds its partial image. The hash
        states are rebuilt by streaming the slot's first ``offset`` bytes through a new
        ImageVerifier; anything else discards the partial (the next transfer starts at 0)."""
        if self._xfer is not None:
            return
        at = self._load_json(TRANSFER_AT)
        if at is None:
            return
        kept_error = self._last_error
        try:
            size, items = self._transfer_cap()
            data = self.store.read(TRANSFER, max_bytes=size)
            if data is None:
                raise MalformedInput("no transfer record")
            rec = cbor.loads(data, self.limits, cap=size, max_items=items, max_total=4 * items)
            if not isinstance(rec, dict) or not isinstance(at, dict):
                raise MalformedInput("the transfer record is damaged")
            if not isinstance(rec.get("id"), str) or at.get("id") != rec["id"]:
                raise MalformedInput("the transfer records do not match")
            x = self._restore(rec, at.get("offset"))
        except UptaneError as e:
            log.warning("the partial image transfer is discarded: %s", e)
            self._pending = None
            self._roots.clear()
            self._received = {}
            self.store.delete(TRANSFER_AT)
            self.store.delete(TRANSFER)
            return
        finally:
            if kept_error and self._last_error != kept_error:
                # verifying again is no new verdict: keep the last refusal's indicator
                self._last_error = kept_error
                self.store.write_json(LAST_ERROR, kept_error)
        self._xfer = x
        log.info("resuming the transfer of %r at byte %d", x.filename, x.offset)

    def _restore(self, rec: dict[str, Any], offset: Any) -> _Transfer:
        filename, total, slot = rec.get("filename"), rec.get("total"), rec.get("slot")
        files, roots = rec.get("files"), rec.get("roots")
        if (
            not isinstance(filename, str)
            or not isinstance(total, int)
            or not isinstance(offset, int)
            or isinstance(offset, bool)
            or not 0 < offset <= total
            or not isinstance(files, list)
            or not isinstance(roots, list)
        ):
            raise MalformedInput("the transfer record is damaged")
        if slot != self.slots.inactive_slot():
            raise ProtocolViolation(f"the partial image is in slot {slot}, not the inactive one")
        try:
            received = {(str(r), str(role)): bytes(body) for r, role, body in files}
            for r, version, root in roots:
                self._roots.setdefault(str(r), {})[int(version)] = bytes(root)
        except (TypeError, ValueError):
            raise MalformedInput("the transfer record is damaged") from None
        # the same verification as when the metadata arrived, at the latest time
        if self.mode == "partial":
            targets = received.get((self.director_name, "targets"))
            stored = targets is None
            if stored:
                targets = self._pending_targets()
            if targets is None:
                raise MalformedInput("the transfer record has no Director targets")
            self._verify_partial(targets, stored=stored)
            del targets
        else:
            self._received = received
            self._verify_full()
        p = self._pending
        if p is None or p.entry.path != filename or p.entry.length != total:
            raise TargetNotFound(f"the verified metadata no longer names {filename[:64]!r}")
        hashes = rec.get("hashes")
        if not isinstance(hashes, dict) or not p.entry.same_image(
            ImageIdentity(filename, total, hashes)
        ):
            raise TargetNotFound(f"the verified metadata names another {filename[:64]!r}")
        # rebuild the hash states from the bytes the slot holds, one chunk at a time
        verifier = ImageVerifier(p.entry, self.limits)
        step = self.limits.chunk_size
        for off in range(0, offset, step):
            verifier.update(self.flash.read(slot, off, min(step, offset - off)))
        writer = self.slots.resume_install(p.entry, offset)
        return _Transfer(
            filename,
            total,
            verifier,
            writer,
            self._speed_monitor(filename),
            id=str(rec["id"]),
            saved=offset,
        )

    def _speed_monitor(self, filename: str) -> SpeedMonitor:
        """§5.4 slow retrieval for one image transfer over the link. The window starts at
        the first chunk; a pause of more than a window with no chunk is not measured (the
        Primary between cycles, a dropped link: see the module doc)."""
        lim = self.limits
        return SpeedMonitor(
            lim.min_bytes_per_second,
            lim.speed_window,
            what=f"image {filename[:64]!r} over the link",
            idle=lim.speed_window,
        )

    def put_image_chunk(self, filename: str, total: int, offset: int, chunk: bytes) -> None:
        """The next chunk, streamed into the inactive slot through the image verifier."""
        if offset == 0:
            self._abort_transfer("a new image transfer started")
            self._begin(filename, total)
        x = self._xfer
        if x is None or x.filename != filename or x.total != total or x.offset != offset:
            raise ProtocolViolation(f"image {filename[:64]!r}: no transfer at offset {offset}")
        try:
            # §5.4 slow retrieval: a chunk that ends a window below the floor is refused;
            # the partial is kept, so a later (faster) transfer resumes it
            x.speed.update(len(chunk), self.clock())
        except SlowRetrievalAttack as e:
            log.warning("image transfer refused: %s", e)
            raise
        try:
            # §4.3 endless data: the verifier refuses bytes past the signed length before
            # they reach the slot
            x.verifier.update(chunk)
            x.writer.write(chunk)
        except UptaneError:
            self._abort_transfer("image chunk refused")
            raise
        p = self._pending
        if x.writer.flushed - x.saved >= self.checkpoint_bytes and x.offset < x.total and p:
            self._checkpoint(x, p)

    def _begin(self, filename: str, total: int) -> None:
        p = self._pending
        if p is None or p.entry.path != filename:
            listed = self._listed(filename)
            if listed is not None:
                # §5.4.3.4: the Director lists it, but not for this ECU (or this hardware)
                check_target_for_ecu(
                    listed, self.ecu_serial, self.hardware_id, self._installed_counter()
                )
            raise TargetNotFound(
                f"the Director's verified targets name no new image {filename[:64]!r} "
                f"for ECU {self.ecu_serial!r}"
            )
        entry = p.entry
        # §5.4.3.3: never take more than the signed length
        if total > entry.length:
            raise EndlessDataAttack(
                f"image {filename[:64]!r} of {total} bytes, the signed length is {entry.length}"
            )
        if total < entry.length:
            raise BadLength(
                f"image {filename[:64]!r} of {total} bytes, the signed length is {entry.length}"
            )
        # §5.4.3.4 against the image that runs now
        check_target_for_ecu(entry, self.ecu_serial, self.hardware_id, self._installed_counter())
        verifier = ImageVerifier(entry, self.limits)
        writer = self.slots.begin_install(total, entry)
        self._xfer = _Transfer(filename, total, verifier, writer, self._speed_monitor(filename))

    def install(self, filename: str | None) -> None:
        """§5.4.3.4 then A/B install of the image received; trusted metadata moves with it."""
        x = self._xfer
        if x is None:
            raise BadLength("no image was received to install")
        if filename is not None and filename != x.filename:
            raise ProtocolViolation(f"INSTALL of {filename[:64]!r}, received {x.filename!r}")
        if x.offset != x.total:
            raise BadLength(f"image {x.filename!r}: {x.offset} of {x.total} bytes received")
        p = self._pending
        assert p is not None and p.entry.path == x.filename
        self._xfer = None
        try:
            # §5.4.3.4: ECU id, hardware id, release counter (again: the slot may have
            # changed since the metadata was checked)
            check_target_for_ecu(
                p.entry, self.ecu_serial, self.hardware_id, self._installed_counter()
            )
            trusted = p.trusted
            if "targets" not in trusted["director"] and self.mode == "partial":
                # the verified Director targets, from the store (read before the slot
                # switch: without them the install cannot become trusted)
                targets = self._pending_targets()
                if targets is None or sha256(targets).digest() != p.targets_sha256:
                    raise MalformedInput("the verified Director targets are not in the store")
                trusted = dict(trusted, director=dict(trusted["director"], targets=targets))
                del targets
        except UptaneError:
            self._xfer = x
            self._abort_transfer("the image no longer fits this ECU")
            raise
        # exact length, every hash, read-back, then the switch to a trial boot
        try:
            self.slots.finish_install(x.writer, x.verifier)
        finally:
            self._forget_transfer(x)  # installed or rejected: never resumed
        self._pending = None
        self._save_trusted(trusted)
        if self._partial is not None and p.verified is not None:
            self._partial.root, self._partial.targets, self._partial.raw = p.verified
        elif self._partial is not None:
            self._partial = PartialVerifier.load(
                trusted["director"],
                self.ecu_serial,
                self.hardware_id,
                self.limits,
                encoding=self.encoding,
                vehicle_id=self.vehicle_id,
            )
            self._partial.raw.pop("targets", None)  # in the store: RAM keeps the floor
        del trusted
        self._clear_error()
        if self.reboot_after_install:
            self.start()

    def status(self) -> Status:
        st = self.slots.status()
        x = self._xfer
        if x is not None:
            state = "ready" if x.offset == x.total else "receiving"
        elif st.trial is not None:
            state = "trial"
        elif self._pending is not None:
            state = "verified"
        else:
            state = "idle"
        return Status(
            state=state,
            image_filename=x.filename if x else None,
            image_total=x.total if x else None,
            image_offset=x.offset if x else 0,
            installed=st.installed.filename if st.installed else None,
            attack=self._last_error.get("code"),
        )

    # --- for the bench tool and tests ----------------------------------------------------

    def last_result(self) -> InstallResult | None:
        return self.slots.status().last_result


class AgentEndpoint(SecondaryEndpoint):
    """The link endpoint for a :class:`SecondaryAgent`: every refused request, including
    those the endpoint itself refuses (an over-long metadata file, a bad offset), is
    remembered as the attack indicator of the next report."""

    handler: SecondaryAgent

    def handle(self, msg: Any) -> Any:
        try:
            return super().handle(msg)
        except UptaneError as e:
            self.handler._note_error(e)
            raise


__all__ = ["JSON", "AgentEndpoint", "SecondaryAgent"]
