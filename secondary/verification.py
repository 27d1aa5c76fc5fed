"""How a Secondary verifies the metadata the Primary sends: two strategies behind one
interface, which the agent consults instead of asking which mode it runs in.

- :class:`PartialVerification` (§5.4.4.1): the Director's targets only, checked by
  :class:`uptane.partial.PartialVerifier`; Director root versions sent before them are
  applied first (key rotation).
- :class:`FullVerification` (§5.4.4.2): every role of both repositories and the map file
  are collected, and :func:`uptane.verify.full_verification` runs for this ECU's image when
  the Director's targets arrive.

Both answer the same questions: which files of a PUT_METADATA they use (:meth:`wants`),
what a file does (:meth:`receive`; the Director's targets run :meth:`verify`), which
targets are the latest verified (:meth:`latest_targets`), what becomes trusted when the
image they name installs (:meth:`trusted_at_install`, :meth:`installed`), and how a
checkpointed transfer's metadata is verified again after a reboot (:meth:`verify_again`).

New Director metadata that names a new image for this ECU becomes trusted *with* that
image (a :class:`Pending`): if the image is refused, the previous targets stay trusted and
the previous image stays installed. Metadata that names nothing new is trusted (and
stored) at once.

Memory in partial mode (bench figure 3b): DER Director targets are checked one entry at a
time (:mod:`uptane.encoding.der_targets`) and RAM keeps only their rollback floor (version,
expiry, this ECU's entry). Their bytes live in the store only: verified targets that name a
new image are written to PENDING_TARGETS as soon as they verify, so the message is not held
while the image streams, and move into the trusted record at install.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, ClassVar

from hardware.slots import ImageInfo
from secondary.ecu import EcuSettings
from secondary.state import PENDING_TARGETS, AgentState
from uptane.delta import produced_image
from uptane.errors import EndlessDataAttack, MalformedInput, UptaneError
from uptane.metadata import MapFile, Mapping, TargetFile, Targets
from uptane.partial import PartialVerifier, listed_target
from uptane.trust import RepositoryTrust, peek_version
from uptane.verify import NO_NEW_TARGETS, VehicleContext, full_verification

log = logging.getLogger(__name__)

#: the metadata a checkpointed transfer was verified from: (repository, role) -> bytes
Files = dict[tuple[str, str], bytes]


@dataclass
class Pending:
    """Verified metadata naming a new image for this ECU: trusted once the image installs.
    In partial mode ``trusted["director"]`` has no ``targets``: they are in the store
    (PENDING_TARGETS) until the install."""

    entry: TargetFile
    trusted: dict[str, Any]
    #: what it was verified from, to verify again after a reboot (a TRANSFER record's
    #: ``files`` and ``roots``)
    source: dict[str, list[Any]] = field(default_factory=dict)
    #: the partial verifier's state after verifying (root, rollback floor, raw root), reused
    #: at install instead of verifying the same Director targets again (bench fig 3b); None
    #: after a reboot, when install rebuilds it from the trusted files
    verified: tuple[Any, Any, dict[str, bytes]] | None = None
    #: partial mode: SHA-256 of the PENDING_TARGETS bytes verified, checked again when they
    #: are read back at install
    targets_sha256: bytes | None = None
    #: the signed part of the Director targets that approved the image: they must still
    #: be unexpired at INSTALL, against the latest verified time (issue 21)
    approved_by: Targets | None = None


@dataclass(frozen=True)
class Verified:
    """A verification that passed: ``pending`` names a new image for this ECU, or it is
    None and ``trust`` is the record to trust at once (the metadata names nothing new)."""

    pending: Pending | None
    trust: dict[str, Any] | None = None


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


class Verification(ABC):
    """One way of verifying what the Primary sends (see the module doc). ``trusted`` is
    the part of the trusted record this strategy keeps in RAM."""

    #: the mode's name, as the configuration and HELLO spell it
    mode: ClassVar[str]
    #: whether provisioning needs the Image repository's root (and the vehicle id)
    needs_image_repository: ClassVar[bool]

    def __init__(self, ecu: EcuSettings, state: AgentState) -> None:
        self.ecu = ecu
        self.state = state
        #: root versions the Primary sent since the last verification, by repository
        self.roots: dict[str, dict[int, bytes]] = {}
        self.trusted: dict[str, Any] = {}

    @staticmethod
    def for_mode(mode: str, ecu: EcuSettings, state: AgentState) -> Verification:
        """The strategy configured as ``mode`` ("partial" or "full")."""
        return strategy(mode)(ecu, state)

    # --- PUT_METADATA -------------------------------------------------------------------

    @abstractmethod
    def wants(self, repository: str, role: str) -> bool:
        """Whether this strategy reads ``role`` of ``repository`` (others are ignored)."""

    def add_root(self, repository: str, data: bytes) -> None:
        """A root version sent before the targets, applied when they verify (§5.4.4.3)."""
        roots = self.roots.setdefault(repository, {})
        if len(roots) >= self.ecu.limits.max_root_rotations:
            raise EndlessDataAttack("too many root versions sent")
        roots[peek_version(data, self.ecu.limits, encoding=self.ecu.encoding)] = bytes(data)

    @abstractmethod
    def receive(self, repository: str, role: str, data: bytes) -> bool:
        """Take one metadata file (not a root); True when it completes the set, so that
        :meth:`verify` runs now."""

    @abstractmethod
    def verify(self, data: bytes, installed: ImageInfo | None) -> Verified:
        """Verify what was received, ``data`` (the Director's targets) last; raises what
        verification raises (nothing is trusted then). ``installed`` is the image that
        runs now."""

    @abstractmethod
    def verify_again(self, files: Files, installed: ImageInfo | None) -> Verified:
        """After a reboot: verify a checkpointed transfer's metadata again, now (its roots
        are back in :attr:`roots` already)."""

    def forget_received(self) -> None:
        """Drop what was sent since the last verification."""
        self.roots.clear()

    # --- the trusted targets ------------------------------------------------------------

    @abstractmethod
    def trusted_targets(self) -> bytes | None:
        """The bytes of the Director targets this ECU trusts now."""

    def latest_targets(self, pending: Pending | None) -> bytes | None:
        """The latest verified Director targets: pending (waiting for their image) or
        trusted."""
        if pending is None:
            return self.trusted_targets()
        if "targets" in pending.trusted["director"]:
            targets: bytes = pending.trusted["director"]["targets"]
            return targets
        return self.state.pending_targets()

    def listed(self, filename: str, pending: Pending | None) -> TargetFile | None:
        """The entry for ``filename`` in the latest verified Director targets, if listed."""
        raw = self.latest_targets(pending)
        if raw is None:
            return None
        return listed_target(raw, filename, self.ecu.limits, encoding=self.ecu.encoding)

    def trust(self, rec: dict[str, Any]) -> None:
        """Make ``rec`` the trusted record (store, then RAM)."""
        self.state.write_trusted(rec)
        self.trusted = self._in_ram(rec)

    def _in_ram(self, rec: dict[str, Any]) -> dict[str, Any]:
        """What of the trusted record stays in RAM (all of it, unless a strategy says)."""
        return rec

    # --- install ------------------------------------------------------------------------

    def trusted_at_install(self, pending: Pending) -> dict[str, Any]:
        """The trusted record the install of ``pending``'s image brings; read before the
        slot switch (raises if it cannot be had: then nothing is installed)."""
        return pending.trusted

    def installed(self, pending: Pending, trusted: dict[str, Any]) -> None:
        """``pending``'s image is installed: its metadata becomes the trusted record."""
        self.trust(trusted)


class PartialVerification(Verification):
    """§5.4.4.1: the Director's targets only, with this ECU's entry; the bytes of verified
    targets live in the store, RAM keeps their rollback floor (see the module doc)."""

    mode = "partial"
    needs_image_repository = False

    def __init__(self, ecu: EcuSettings, state: AgentState) -> None:
        super().__init__(ecu, state)
        trusted = state.read_trusted()
        self.verifier = self._load(trusted["director"])
        #: the trusted Director targets are in the store (not in RAM)
        self._stored = False
        self.trusted = self._in_ram(trusted)

    def _load(self, director: dict[str, bytes]) -> PartialVerifier:
        return PartialVerifier.load(
            director,
            self.ecu.ecu_serial,
            self.ecu.hardware_id,
            self.ecu.limits,
            encoding=self.ecu.encoding,
            vehicle_id=self.ecu.vehicle_id,
        )

    def wants(self, repository: str, role: str) -> bool:
        # a partial-verification Secondary needs only the Director's (§5.4.4.1)
        return role != "map" and repository == self.ecu.director_name

    def receive(self, repository: str, role: str, data: bytes) -> bool:
        # the Director's snapshot and timestamp are not needed (§5.4.4.1)
        return role == "targets"

    def verify(self, data: bytes, installed: ImageInfo | None) -> Verified:
        return self._verify(data, installed)

    def verify_again(self, files: Files, installed: ImageInfo | None) -> Verified:
        targets = files.get((self.ecu.director_name, "targets"))
        stored = targets is None
        if stored:
            targets = self.state.pending_targets()
        if targets is None:
            raise MalformedInput("the transfer record has no Director targets")
        return self._verify(targets, installed, stored=stored)

    def _verify(
        self, targets: bytes, installed: ImageInfo | None, *, stored: bool = False
    ) -> Verified:
        """§5.4.4.1 through :class:`PartialVerifier`; on failure nothing changes. Verified
        targets that name a new image are written to PENDING_TARGETS at once (``stored``:
        they are that record already, read back by a resume) and not kept in RAM."""
        pv = self.verifier
        roots = [r for _, r in sorted(self.roots.pop(self.ecu.director_name, {}).items())]
        saved = (pv.root, pv.targets, dict(pv.raw))
        try:
            entry = pv.verify(
                targets,
                self.state.latest_time,
                root_updates=roots,
                installed_release_counter=installed.release_counter if installed else None,
            )
        except UptaneError:
            pv.root, pv.targets, pv.raw = saved
            raise
        # the verifier keeps only the rollback floor; the bytes go to the store below
        director = dict(pv.raw)
        director.pop("targets", None)
        pv.raw.pop("targets", None)
        # a delta counts as installed once the full image it produces runs (issue 17)
        if entry is None or produced_image(entry).same_image(installed):
            return Verified(None, dict(self.trusted, director=dict(director, targets=targets)))
        # the new metadata is trusted together with the image it names
        if not stored:
            self.state.store.write(PENDING_TARGETS, targets)
        verified = (pv.root, pv.targets, dict(director))
        pv.root, pv.targets, pv.raw = saved
        source: dict[str, list[Any]] = {
            "files": [],  # the Director targets are the PENDING_TARGETS record
            "roots": [[self.ecu.director_name, i, r] for i, r in enumerate(roots)],
        }
        trusted = dict(self.trusted, director=director)
        approved = verified[1].signed if verified[1] is not None else None
        return Verified(
            Pending(entry, trusted, source, verified, sha256(targets).digest(), approved)
        )

    def _in_ram(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Not the Director targets (up to the role cap), which only the store keeps: the
        partial verifier keeps their rollback floor and :meth:`trusted_targets` reads them
        back."""
        self._stored = "targets" in rec["director"]
        if not self._stored:
            return rec
        director = {k: v for k, v in rec["director"].items() if k != "targets"}
        self.verifier.raw.pop("targets", None)
        return dict(rec, director=director)

    def trusted_targets(self) -> bytes | None:
        if self._stored:
            targets: bytes | None = self.state.read_trusted()["director"].get("targets")
            return targets
        return self.trusted["director"].get("targets")

    def trusted_at_install(self, pending: Pending) -> dict[str, Any]:
        trusted = pending.trusted
        if "targets" in trusted["director"]:
            return trusted
        # the verified Director targets, from the store (read before the slot switch:
        # without them the install cannot become trusted)
        targets = self.state.pending_targets()
        if targets is None or sha256(targets).digest() != pending.targets_sha256:
            raise MalformedInput("the verified Director targets are not in the store")
        return dict(trusted, director=dict(trusted["director"], targets=targets))

    def installed(self, pending: Pending, trusted: dict[str, Any]) -> None:
        self.trust(trusted)
        if pending.verified is not None:
            self.verifier.root, self.verifier.targets, self.verifier.raw = pending.verified
        else:
            self.verifier = self._load(trusted["director"])
            self.verifier.raw.pop("targets", None)  # in the store: RAM keeps the floor


class FullVerification(Verification):
    """§5.4.4.2 for this ECU's image (``only_ecu``), from every file of both repositories
    and the map file the Primary sent."""

    mode = "full"
    needs_image_repository = True

    def __init__(self, ecu: EcuSettings, state: AgentState) -> None:
        if ecu.vehicle_id is None:
            raise ValueError("full verification needs the vehicle id")
        super().__init__(ecu, state)
        self.vehicle_id: str = ecu.vehicle_id
        self.trusted = state.read_trusted()
        #: the non-root files sent since the last verification
        self.received: Files = {}

    def wants(self, repository: str, role: str) -> bool:
        return True

    def receive(self, repository: str, role: str, data: bytes) -> bool:
        key = ("map", "map") if role == "map" else (repository, role)
        if key not in self.received and len(self.received) >= 2 * self.ecu.limits.max_roles + 1:
            raise EndlessDataAttack("too many metadata files sent")
        self.received[key] = bytes(data)
        return repository == self.ecu.director_name and role == "targets"

    def verify(self, data: bytes, installed: ImageInfo | None) -> Verified:
        return self._verify(installed)  # ``data`` is the last file received

    def verify_again(self, files: Files, installed: ImageInfo | None) -> Verified:
        self.received = dict(files)
        return self._verify(installed)

    def forget_received(self) -> None:
        super().forget_received()
        self.received = {}

    def trusted_targets(self) -> bytes | None:
        return self.trusted["director"].get("targets")

    def _verify(self, installed: ImageInfo | None) -> Verified:
        """§5.4.4.2 over what was received (which is consumed, verified or not)."""
        received, self.received = self.received, {}
        names = (self.ecu.director_name, self.ecu.image_repo_name)
        roots = {name: self.roots.pop(name, {}) for name in names}
        map_bytes = received.get(("map", "map"), self.trusted.get("map"))
        map_file = self._map_file(map_bytes)
        trusts = {name: self._trust(name) for name in names}
        sources = {
            name: _MemorySource(
                {role: data for (repo, role), data in received.items() if repo == name},
                roots[name],
            )
            for name in names
        }
        result = full_verification(
            trusts[self.ecu.director_name],
            trusts[self.ecu.image_repo_name],
            map_file,
            sources,
            self.state.latest_time,
            self._vehicle(installed),
            self.ecu.limits,
            only_ecu=self.ecu.ecu_serial,
        )
        new = dict(self.trusted)
        new["director"] = dict(trusts[self.ecu.director_name].raw)
        new["image"] = dict(trusts[self.ecu.image_repo_name].raw)
        if map_bytes is not None:
            new["map"] = map_bytes
        approved = result.for_ecu(self.ecu.ecu_serial)
        if approved is not None and not produced_image(approved.director_target).same_image(
            installed
        ):
            source: dict[str, list[Any]] = {
                "files": [[repo, role, data] for (repo, role), data in received.items()],
                "roots": [[n, v, d] for n, vs in roots.items() for v, d in vs.items()],
            }
            director = trusts[self.ecu.director_name].targets
            signed = director.signed if director is not None else None
            return Verified(Pending(approved.director_target, new, source, approved_by=signed))
        if result.stopped_early not in (None, NO_NEW_TARGETS) or approved is None:
            log.info("full verification: %s", result.stopped_early or "nothing for this ECU")
        return Verified(None, new)

    def _map_file(self, map_bytes: bytes | None) -> MapFile:
        if map_bytes is None:
            # the Uptane default (§5.2.6): every image needs both repositories
            both = [self.ecu.director_name, self.ecu.image_repo_name]
            return MapFile({n: [] for n in both}, [Mapping(["*"], both, 2, True)])
        lim = self.ecu.limits
        lim.check_bytes("map file", len(map_bytes), lim.map_file_bytes)
        return MapFile.from_json(map_bytes, lim)

    def _trust(self, name: str) -> RepositoryTrust:
        is_director = name == self.ecu.director_name
        files = self.trusted.get("director" if is_director else "image")
        if not files:
            raise MalformedInput(f"no trusted root for repository {name!r}")
        return RepositoryTrust.load(
            name,
            files,
            self.ecu.limits,
            encoding=self.ecu.encoding,
            director=is_director,
            vehicle_id=self.vehicle_id if is_director else None,
        )

    def _vehicle(self, installed: ImageInfo | None) -> VehicleContext:
        """This ECU as the only one of its vehicle, with the image that runs now."""
        serial = self.ecu.ecu_serial
        counter = installed.release_counter if installed is not None else None
        return VehicleContext(
            self.vehicle_id,
            "",
            {serial: self.ecu.hardware_id},
            {serial: counter} if counter is not None else {},
            {serial: installed.to_target()} if installed is not None else {},
        )


#: the strategies by the mode name the configuration gives
STRATEGIES: dict[str, type[Verification]] = {
    cls.mode: cls for cls in (PartialVerification, FullVerification)
}


def strategy(mode: str) -> type[Verification]:
    """The strategy class for ``mode``; ValueError for an unknown one."""
    cls = STRATEGIES.get(mode)
    if cls is None:
        raise ValueError(f"unknown verification mode {mode!r}")
    return cls
