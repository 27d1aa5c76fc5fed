"""The per-repository TUF/Uptane client workflow (Uptane §5.4.4.3–§5.4.4.8), sans-I/O.

:class:`RepositoryTrust` holds the trusted metadata of one repository (the Director or the
Image repository) and updates it one file at a time, in the Standard's order:
root (N+1 loop), timestamp, snapshot, targets, delegated targets. Every check cites its
section. Nothing here does I/O: :meth:`RepositoryTrust.refresh` and
:meth:`RepositoryTrust.find_target` get bytes through a :class:`MetadataSource` the caller
supplies (an HTTP fetcher, a directory, a link), and the caller persists ``raw``.

The checks themselves are module-level functions (:func:`verify_root_update`,
:func:`verify_targets_bytes`, :func:`check_director_targets`, ...) so that partial
verification (:mod:`uptane.partial`) runs the very same code.

Decisions the Standard leaves open, made here:

- **Timestamp of equal version** (§5.4.4.4 step 3; TUF 5.4.3: the new version must not be
  *lower*, and an equal version is not an update): the trusted timestamp is kept and the
  refresh goes on with it, as python-tuf does. When the file served under the trusted
  version has a different signed part, :attr:`RefreshResult.timestamp_kept` says so in one
  line; it is no attack indicator (a repository re-signing without a version bump is a
  repository mistake, and a key holder swapping content under one version gains nothing:
  the trusted one is used). The kept timestamp must still be unexpired.
- **Fast-forward recovery** (§5.4.4.3 step 4) happens as soon as a verified root rotates the
  timestamp or snapshot keys (or their threshold), not after the expiry check, so an expired
  final root cannot leave a fast-forwarded timestamp in place for the next cycle. Either
  rotation forgets the trusted timestamp and snapshot (TUF 5.3.11); a rotation of the
  *snapshot* keys also forgets the trusted targets and delegated targets, whose versions
  are held through the snapshot (as python-tuf: a targets file rolled back from 100 to 1
  and listed by the new snapshot is then accepted; only the root keys can do this).
- **Terminating delegations** (§5.4.4.7) follow TUF and python-tuf: the terminating role's
  own delegations are still searched, but nothing after it. (Read literally, §5.4.4.7 step 3
  would stop before the terminating role's sub-delegations, which would make delegating
  from a terminating role pointless; both readings stop the search at that subtree.)
- **Multi-role delegations** (§5.4.4.8): entries are grouped by identical length, hashes
  *and the whole* custom object (stricter than the Standard's non-custom plus "MUST match"
  custom grouping: fields such as hardware ids and release counters must agree too; a
  disagreement fails closed). A sub-role that fails to load counts as not agreeing.
  Without a group of ``minRolesInAgreement`` roles the result is
  :class:`~uptane.errors.TargetNotFound`; with several, the group holding the earliest
  listed role wins.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from uptane.encoding.json import canonical
from uptane.errors import (
    BadEcuId,
    DirectorDelegation,
    DropRequestAttack,
    EndlessDataAttack,
    ExpiredMetadata,
    LimitExceeded,
    MalformedInput,
    MixAndMatchAttack,
    RepeatedEcuId,
    RollbackAttack,
    TargetNotFound,
    UnknownRole,
    UnsupportedAlgorithm,
    UptaneError,
    VehicleMismatch,
)
from uptane.keys import Key
from uptane.limits import TOP_LEVEL_ROLES, Limits
from uptane.metadata import (
    JSON,
    DelegatedRole,
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
    decode,
)
from uptane.signatures import check_threshold

#: hash algorithms accepted in snapshot/timestamp entries (metadata files, not images)
META_HASH_ALGORITHMS = ("sha256", "sha384", "sha512", "sha224", "sha3_256", "sha3_512", "blake2b")


class MetadataSource(Protocol):
    """Where a repository's metadata bytes come from (the caller's I/O).

    ``fetch_metadata(role, version, max_bytes)``: the bytes of ``role`` (a top-level or
    delegated role name), at ``version`` when not None (consistent snapshots:
    ``VERSION.ROLE.EXT``), else the unversioned file. Returns None when the file does not
    exist (HTTP 404). Must never return more than ``max_bytes`` bytes: a transport raises
    :class:`uptane.errors.EndlessDataAttack` when the peer sends more.
    """

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None: ...


@dataclass
class RefreshResult:
    """What a top-level refresh changed. ``stopped_early`` names the early stop taken, if any:
    only 'timestamp unchanged' (§5.4.4.2 step 4: the snapshot the timestamp names is the
    trusted one, and so is the targets it names). A new snapshot that lists the trusted
    targets version again is *not* an early stop: it shows as ``targets_changed=False``, and
    deciding whether anything is left to install (§5.4.4.2 step 6, 'no new targets') is
    full verification's job, which compares with what is installed."""

    root_rotations: int = 0
    timestamp_changed: bool = False
    snapshot_changed: bool = False
    targets_changed: bool = False
    stopped_early: str | None = None
    keys_rotated: list[str] = field(default_factory=list)
    #: one line when the repository served a timestamp with the trusted version but another
    #: signed part: the trusted one was kept (a note for the log, not an attack indicator)
    timestamp_kept: str | None = None


# --- the checks, shared with partial verification ----------------------------------------


def check_not_expired(
    signed: Signed, now: datetime, *, role: str, repository: str | None = None
) -> None:
    """Freeze-attack check of §5.4.4.3 step 3, §5.4.4.4 step 4, §5.4.4.5 step 7 and
    §5.4.4.6 step 5: the current time must be before the expiry."""
    if signed.is_expired(now):
        raise ExpiredMetadata(
            f"{role} version {signed.version} expired at {signed.expires.isoformat()}",
            repository=repository,
            role=role,
        )


def check_meta_file(
    data: bytes, meta: MetaFile, *, role: str, repository: str | None = None
) -> None:
    """The bytes in hand have the length and every hash their snapshot/timestamp entry lists
    (§5.4.4.5 step 2, §5.4.4.6 step 2: a mismatch is a mix-and-match attack)."""
    if meta.length is not None and len(data) != meta.length:
        raise MixAndMatchAttack(
            f"{role} is {len(data)} bytes, the listing says {meta.length}",
            repository=repository,
            role=role,
        )
    for alg, expected in (meta.hashes or {}).items():
        if alg not in META_HASH_ALGORITHMS:
            raise UnsupportedAlgorithm(
                f"hash algorithm {alg[:32]!r} is not supported", repository=repository, role=role
            )
        if not hmac.compare_digest(hashlib.new(alg, data).hexdigest(), expected.lower()):
            raise MixAndMatchAttack(
                f"{role}: {alg} does not match the listing", repository=repository, role=role
            )


def _decode(data: bytes, limits: Limits, encoding: str, role_type: str, cap: int) -> Metadata[Any]:
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedInput("metadata must be bytes")
    if len(data) > cap:
        raise EndlessDataAttack(f"{len(data)} bytes exceeds the {cap}-byte cap")
    return decode(bytes(data), limits, encoding=encoding, role_type=role_type, cap=cap)


def _role_cap(limits: Limits, role: str, listed: int | None = None) -> int:
    cap = limits.bytes_for_role(role)
    return cap if listed is None else min(cap, listed)


def verify_trusted_root(
    data: bytes, limits: Limits, *, encoding: str = JSON, repository: str | None = None
) -> Metadata[Root]:
    """A provisioned or persisted root (§5.4.1, §5.4.4.3 step 1): signed by a threshold of
    its own root keys. Its expiry is checked by the root loop, not here."""
    try:
        root: Metadata[Root] = _decode(
            data, limits, encoding, "root", limits.bytes_for_role("root")
        )
        keys, entry = root.signed.role_keys("root")
        verify_signed_by(root, keys, entry.keyids, entry.threshold, limits, role="root")
    except UptaneError as e:
        raise e.at(repository=repository, role="root") from None
    return root


def peek_version(data: bytes, limits: Limits, *, encoding: str = JSON, role: str = "root") -> int:
    """The version a (not yet verified) metadata file claims, to skip files already had;
    never a basis for trust."""
    md: Metadata[Signed] = _decode(data, limits, encoding, role, limits.bytes_for_role(role))
    return md.signed.version


def verify_root_update(
    trusted: Metadata[Root],
    data: bytes,
    limits: Limits,
    *,
    encoding: str = JSON,
    repository: str | None = None,
) -> Metadata[Root]:
    """One step of the root loop (§5.4.4.3 step 2): ``data`` must be root version N+1,
    signed by a threshold of unique keys of root N *and* of itself. Expiry is not checked
    here (step 3 checks the final root after the loop)."""
    try:
        new: Metadata[Root] = _decode(data, limits, encoding, "root", limits.bytes_for_role("root"))
        old_root = trusted.signed
        # §5.4.4.3 step 2.3: a threshold of the keys of the trusted root (version N) ...
        keys, entry = old_root.role_keys("root")
        check_threshold(_payload(new), new.signatures, keys, entry.keyids, entry.threshold, limits)
        # ... and a threshold of the keys of the new root (version N+1), unique keys each.
        keys, entry = new.signed.role_keys("root")
        check_threshold(_payload(new), new.signatures, keys, entry.keyids, entry.threshold, limits)
        # §5.4.4.3 step 2.4: the version signed must be exactly N+1 (rollback).
        if new.signed.version != old_root.version + 1:
            raise RollbackAttack(
                f"root version {new.signed.version} offered where "
                f"{old_root.version + 1} was expected"
            )
    except UptaneError as e:
        raise e.at(repository=repository, role="root") from None
    return new


def rotated_roles(old: Root, new: Root) -> list[str]:
    """Top-level roles whose key ids or threshold differ between two roots."""
    out = []
    for role in TOP_LEVEL_ROLES:
        a, b = old.roles.get(role), new.roles.get(role)
        if a is None or b is None:
            continue
        if set(a.keyids) != set(b.keyids) or a.threshold != b.threshold:
            out.append(role)
            continue
        # the same key id always names the same key value (it is its hash), but a root may
        # list the id with a different value; compare what the ids resolve to as well
        if any(old.keys.get(k) != new.keys.get(k) for k in a.keyids):
            out.append(role)
    return out


def _payload(md: Metadata[Any]) -> bytes:
    return md.signed_bytes if md.signed_bytes is not None else md.payload()


def verify_signed_by(
    md: Metadata[Any],
    keys: Mapping[str, Key],
    keyids: Iterable[str],
    threshold: int,
    limits: Limits,
    *,
    role: str,
    repository: str | None = None,
) -> None:
    """Threshold of unique trusted keys over the signed part (checks for an arbitrary
    software attack, §5.4.4.3–§5.4.4.6)."""
    check_threshold(
        _payload(md),
        md.signatures,
        keys,
        keyids,
        threshold,
        limits,
        repository=repository,
        role=role,
    )


def verify_targets_bytes(
    data: bytes,
    *,
    role: str,
    keys: Mapping[str, Key],
    keyids: Iterable[str],
    threshold: int,
    trusted: Metadata[Targets] | None,
    snapshot_meta: MetaFile | None,
    now: datetime,
    limits: Limits,
    encoding: str = JSON,
    repository: str | None = None,
) -> Metadata[Targets]:
    """§5.4.4.6 steps 1–5 for a top-level or delegated targets file. ``snapshot_meta`` is
    the snapshot's entry for it, or None where the Standard lets the check be skipped
    (partial verification: step 2). Director checks (steps 6–8) are
    :func:`check_director_targets`."""
    try:
        # §5.4.4.6 step 1: at most the listed length, or Z bytes.
        cap = _role_cap(limits, role, None if snapshot_meta is None else snapshot_meta.length)
        if len(data) > cap:
            raise EndlessDataAttack(f"{len(data)} bytes exceeds the {cap}-byte cap")
        # §5.4.4.6 step 2: hashes (if any) and version match the snapshot (mix-and-match).
        if snapshot_meta is not None:
            check_meta_file(data, snapshot_meta, role=role, repository=repository)
        new: Metadata[Targets] = _decode(data, limits, encoding, "targets", cap)
        if snapshot_meta is not None and new.signed.version != snapshot_meta.version:
            raise MixAndMatchAttack(
                f"{role} version {new.signed.version}, snapshot lists {snapshot_meta.version}"
            )
        # §5.4.4.6 step 3: a threshold of the keys the root (3.1) or the delegating
        # targets role (3.2) names.
        verify_signed_by(new, keys, keyids, threshold, limits, role=role)
        check_targets_version(new.signed.version, trusted, role=role)
        # §5.4.4.6 step 5: not expired (freeze).
        check_not_expired(new.signed, now, role=role)
    except UptaneError as e:
        raise e.at(repository=repository, role=role) from None
    return new


def check_targets_version(version: int, trusted: Metadata[Targets] | None, *, role: str) -> None:
    """§5.4.4.6 step 4: a targets version must not decrease (rollback); an equal version is
    accepted. Shared by full verification and the Secondary's DER walk (uptane/partial.py)."""
    # §5.4.4.6 step 4
    if trusted is not None and version < trusted.signed.version:
        raise RollbackAttack(
            f"{role} version {version} is below the trusted {trusted.signed.version}"
        )


def check_director_targets(
    targets: Targets,
    *,
    vehicle_id: str | None = None,
    ecu_ids: Collection[str] | None = None,
    repository: str = "director",
) -> None:
    """The Director-only checks of §5.4.4.6 (steps 6–8), with §5.2.3.1:

    - no delegations (:class:`DirectorDelegation`);
    - no ECU id named by more than one target (:class:`RepeatedEcuId`);
    - when the vehicle's ECUs are known (a Primary), every ECU id is one of them
      (:class:`BadEcuId`, step 8);
    - when our vehicle id is known, the targets name this vehicle (:class:`VehicleMismatch`).
      Empty Director targets SHALL carry the vehicle id (§5.2.3.1); without it they could be
      replayed to any vehicle, so they are refused too.
    """
    where = {"repository": repository, "role": "targets"}
    # §5.4.4.6 step 6: the Director does not delegate.
    if targets.delegations is not None:
        raise DirectorDelegation("Director targets metadata must not delegate", **where)
    # §5.4.4.6 step 7: no ECU identifier is represented more than once.
    seen: dict[str, str] = {}
    for path, target in targets.targets.items():
        for ecu in target.ecu_ids:
            if ecu in seen:
                raise RepeatedEcuId(
                    f"ECU {ecu[:64]!r} is named by {seen[ecu][:64]!r} and {path[:64]!r}", **where
                )
            seen[ecu] = path
    # §5.4.4.6 step 8 (Primary): every ECU id listed is an ECU present in the vehicle.
    if ecu_ids is not None:
        known = set(ecu_ids)
        for ecu, path in seen.items():
            if ecu not in known:
                raise BadEcuId(
                    f"target {path[:64]!r} names ECU {ecu[:64]!r}, not in this vehicle", **where
                )
    # §5.2.3.1: the vehicle identifier binds the targets to this vehicle (anti-replay).
    if vehicle_id is not None:
        if targets.vehicle_id is not None and targets.vehicle_id != vehicle_id:
            raise VehicleMismatch(
                f"Director targets are for vehicle {targets.vehicle_id[:64]!r}, "
                f"this is {vehicle_id[:64]!r}",
                **where,
            )
        if targets.vehicle_id is None and not targets.targets:
            raise VehicleMismatch("empty Director targets do not name the vehicle", **where)


def is_delegated_path(delegation: DelegatedRole, path: str) -> bool:
    """TUF path matching (§5.4.4.7 step 4.1): ``path_hash_prefixes`` on the SHA-256 of the
    path, or shell-style ``paths`` matched per '/'-separated segment, so that '*' never
    crosses a '/'."""
    if delegation.path_hash_prefixes is not None:
        digest = hashlib.sha256(path.encode("utf-8")).hexdigest()
        return any(digest.startswith(p) for p in delegation.path_hash_prefixes)
    if delegation.paths is not None:
        parts = path.split("/")
        for pattern in delegation.paths:
            pparts = pattern.split("/")
            if len(pparts) == len(parts) and all(
                fnmatch.fnmatchcase(t, p) for t, p in zip(parts, pparts, strict=True)
            ):
                return True
    return False


def delegation_applies(delegation: DelegatedRole, path: str, hardware_id: str | None) -> bool:
    """§5.4.4.7 step 4.1: the path must match AND, when the delegation lists hardware ids and
    a hardware id is given, the hardware id must be one of them."""
    if not is_delegated_path(delegation, path):
        return False
    return not (
        delegation.hardware_ids is not None
        and hardware_id is not None
        and hardware_id not in delegation.hardware_ids
    )


def _target_identity(target: TargetFile) -> bytes:
    """What two roles must agree on in a multi-role delegation (§5.4.4.8 step 2.1)."""
    return canonical({"length": target.length, "hashes": target.hashes, "custom": target.custom})


class _Terminated(Exception):
    """Internal: a terminating delegation was passed without finding the target."""


@dataclass
class _Search:
    path: str
    hardware_id: str | None
    source: MetadataSource
    now: datetime
    visited: int = 0
    #: roles on the current delegation path (cycle detection)
    active: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- the state machine ----------------------------------------------------------------


class RepositoryTrust:
    """Trusted metadata of one repository and the Standard's update steps.

    ``name`` is "director" or "image" (used in errors and in Director-only checks).
    ``encoding`` is JSON or DER; all files of one repository use one encoding.
    ``director`` forces the Director-only checks on or off (default: ``name == "director"``);
    ``vehicle_id`` and ``ecu_ids`` feed them when known (a Primary knows both).
    """

    name: str
    limits: Limits
    encoding: str
    root: Metadata[Root]
    timestamp: Metadata[Timestamp] | None
    snapshot: Metadata[Snapshot] | None
    targets: Metadata[Targets] | None
    delegated: dict[str, Metadata[Targets]]
    #: the exact bytes of every trusted file, by role name, for the caller to persist
    raw: dict[str, bytes]

    def __init__(
        self,
        name: str,
        trusted_root: bytes,
        limits: Limits,
        *,
        encoding: str = JSON,
        director: bool | None = None,
        vehicle_id: str | None = None,
        ecu_ids: Collection[str] | None = None,
    ) -> None:
        """Start from a provisioned root (§5.4.1). It must be signed by a threshold of its
        own root keys; expiry is not checked here (the root loop does it)."""
        self.name = name
        self.limits = limits
        self.encoding = encoding
        self.is_director = (name == "director") if director is None else director
        self.vehicle_id = vehicle_id
        self.ecu_ids = None if ecu_ids is None else frozenset(ecu_ids)
        self.root = verify_trusted_root(trusted_root, limits, encoding=encoding, repository=name)
        self.timestamp = None
        self.snapshot = None
        self.targets = None
        self.delegated = {}
        self.raw = {"root": bytes(trusted_root)}
        #: roles dropped by :meth:`load` because they no longer verify
        self.dropped: list[str] = []
        #: roles whose keys the last root update rotated (fast-forward recovery)
        self.last_rotated: list[str] = []
        #: the note of the last timestamp update that kept the trusted timestamp (see
        #: :attr:`RefreshResult.timestamp_kept`), else None
        self.timestamp_kept: str | None = None
        #: top-level role -> (root, file): the trusted file this object checked against
        #: that root's keys for the role (see :meth:`_check_still_signed`)
        self._signed_under: dict[str, tuple[Metadata[Root], Metadata[Any]]] = {}
        #: role -> (bytes, digest of every input of its last signature check that passed)
        self._checked: dict[str, tuple[bytes, str]] = {}
        #: such digests from an earlier object (:meth:`load`'s ``verified``)
        self._given: frozenset[str] = frozenset()

    def _err(self, e: UptaneError, role: str) -> UptaneError:
        return e.at(repository=self.name, role=role)

    @classmethod
    def load(
        cls,
        name: str,
        files: dict[str, bytes],
        limits: Limits,
        *,
        encoding: str = JSON,
        director: bool | None = None,
        vehicle_id: str | None = None,
        ecu_ids: Collection[str] | None = None,
        verified: Collection[str] = (),
    ) -> RepositoryTrust:
        """Rebuild from persisted ``raw`` files (root required; the rest optional). Each file
        is re-verified against the chain (signatures and bindings) but expired files are
        accepted as *previous* state, so rollback checks still hold after a long offline
        period; they are never trusted for an install until refreshed.

        A non-root file that no longer verifies (for example signed by keys a later root
        rotated away) is dropped and named in ``dropped``; the root must verify.

        ``verified`` are :meth:`verified_checks` an earlier object returned: a signature
        check whose every input (the file's bytes, the keys, key ids and threshold that
        authorise it, the limits, the encoding) is one of those is not made again, since it
        would give the same answer; anything else is checked in full."""
        if "root" not in files:
            raise MalformedInput("persisted state has no root", repository=name, role="root")
        t = cls(
            name,
            files["root"],
            limits,
            encoding=encoding,
            director=director,
            vehicle_id=vehicle_id,
            ecu_ids=ecu_ids,
        )
        t._given = frozenset(verified)
        t._load_top_level(files)
        t._load_delegated(files)
        return t

    def _load_top_level(self, files: dict[str, bytes]) -> None:
        """:meth:`load`: the persisted timestamp, snapshot and targets, each checked
        against the trusted root's keys; one that fails is dropped."""
        root, limits = self.root.signed, self.limits
        for role in ("timestamp", "snapshot", "targets"):
            data = files.get(role)
            if data is None:
                continue
            try:
                md = _decode(data, limits, self.encoding, role, limits.bytes_for_role(role))
                keys, entry = root.role_keys(role)
                self._check_signed(md, data, keys, entry.keyids, entry.threshold, role)
            except UptaneError:
                self.dropped.append(role)
                continue
            setattr(self, role, md)
            self.raw[role] = bytes(data)
            self._signed_under[role] = (self.root, md)
        # bindings kept: a snapshot newer than the timestamp that names it cannot be ours
        if (
            self.timestamp is not None
            and self.snapshot is not None
            and self.snapshot.signed.version > self.timestamp.signed.snapshot_meta.version
        ):
            self.snapshot = None
            self.raw.pop("snapshot")
            self.dropped.append("snapshot")

    def _load_delegated(self, files: dict[str, bytes]) -> None:
        """:meth:`load`: the persisted delegated roles, verified breadth-first from the
        top-level targets; one that fails, or that no verified role delegates to, is
        dropped."""
        limits = self.limits
        pending = {r: d for r, d in files.items() if r not in TOP_LEVEL_ROLES}
        queue = ["targets"] if self.targets is not None else []
        steps = 0
        while queue and pending:
            parent = queue.pop(0)
            steps += 1
            if steps > limits.max_delegations_visited:
                break
            for child in list(pending):
                try:
                    keys, keyids, threshold = self._delegation_keys(parent, child)
                except UnknownRole:
                    continue
                data = pending.pop(child)
                try:
                    md = _decode(
                        data, limits, self.encoding, "targets", limits.bytes_for_role(child)
                    )
                    self._check_signed(md, data, keys, keyids, threshold, child)
                except UptaneError:
                    self.dropped.append(child)
                    continue
                self.delegated[child] = md
                self.raw[child] = bytes(data)
                queue.append(child)
        self.dropped.extend(sorted(pending))

    def _check_key(
        self, data: bytes, keys: Mapping[str, Key], keyids: Iterable[str], threshold: int
    ) -> str:
        """One digest of everything a signature check of ``data`` depends on: its bytes
        (signed part and signatures), the encoding, the limits, the threshold, and each
        authorised key id with the key it names (or its absence)."""
        h = hashlib.sha256(b"uptane signature check v1\0")
        h.update(f"{self.encoding}\0{self.limits!r}\0{threshold}\0".encode())
        h.update(hashlib.sha256(data).digest())
        for kid in sorted(set(keyids)):
            k = keys.get(kid)
            h.update(b"\0" + kid.encode() + b"=" + (canonical(k.to_dict()) if k else b"-"))
        return h.hexdigest()

    def _check_signed(
        self,
        md: Metadata[Any],
        data: bytes,
        keys: Mapping[str, Key],
        keyids: Iterable[str],
        threshold: int,
        role: str,
    ) -> None:
        """:func:`verify_signed_by`, unless this object, or the one whose
        :meth:`verified_checks` :meth:`load` was given, already made this very check (the
        same inputs give the same answer); a check that passes is remembered."""
        keyids = list(keyids)
        key = self._check_key(data, keys, keyids, threshold)
        last = self._checked.get(role)
        if key not in self._given and (last is None or last[1] != key):
            verify_signed_by(md, keys, keyids, threshold, self.limits, role=role)
        self._checked[role] = (data, key)

    def _remember(
        self, role: str, data: bytes, keys: Mapping[str, Key], keyids: Iterable[str], t: int
    ) -> None:
        """A check :func:`verify_targets_bytes` made and passed, for :meth:`verified_checks`."""
        self._checked[role] = (data, self._check_key(data, keys, keyids, t))

    def verified_checks(self) -> list[str]:
        """The signature checks behind the trusted files now held (see :meth:`load`), for
        a client to keep beside them; a file without one is checked again on load."""
        return sorted(
            key
            for role, (data, key) in self._checked.items()
            if self.raw.get(role) is not None and self.raw[role] == data
        )

    # --- single steps, each citing its section --------------------------------------------

    def update_root(self, data: bytes) -> Metadata[Root]:
        """§5.4.4.3: accept root version N+1 signed by a threshold of the old AND of the new
        root keys, with exactly version N+1. Expiry is checked after the loop."""
        new = verify_root_update(
            self.root, data, self.limits, encoding=self.encoding, repository=self.name
        )
        rotated = rotated_roles(self.root.signed, new.signed)
        # §5.4.4.3 step 2.5: the new root is now the latest.
        self.root = new
        self.raw["root"] = bytes(data)
        self.last_rotated = rotated
        # §5.4.4.3 step 4: timestamp and/or snapshot keys rotated -> forget the trusted
        # timestamp and snapshot (recovery from fast-forward attacks). Done at once, so an
        # expiry failure after the loop cannot keep a fast-forwarded version around.
        forget: list[str] = []
        if "timestamp" in rotated or "snapshot" in rotated:
            forget += ["timestamp", "snapshot"]
        if "snapshot" in rotated:
            # the targets versions are held through the snapshot: with it go the trusted
            # targets and delegated targets it listed (TUF fast-forward recovery, python-tuf)
            forget += ["targets", *self.delegated]
            self.delegated = {}
        for role in forget:
            if role in TOP_LEVEL_ROLES:
                setattr(self, role, None)
            self.raw.pop(role, None)
            self._signed_under.pop(role, None)
        return new

    def check_root_fresh(self, now: datetime) -> None:
        """§5.4.4.3: after the loop the final root must not be expired (FreezeAttack).
        If the timestamp/snapshot keys rotated, forget trusted timestamp/snapshot
        (fast-forward recovery; :meth:`update_root` already did it when it happened)."""
        # §5.4.4.3 step 3: the latest root is not expired (freeze).
        check_not_expired(self.root.signed, now, role="root", repository=self.name)

    def update_timestamp(self, data: bytes, now: datetime) -> Metadata[Timestamp]:
        """§5.4.4.4: threshold, version >= trusted, snapshot version in it >= trusted, not
        expired. An equal version is no update: the trusted timestamp is kept (and must be
        unexpired); ``timestamp_kept`` notes a different signed part under that version."""
        role = "timestamp"
        self.timestamp_kept = None
        try:
            self.check_root_fresh(now)
            # §5.4.4.4 step 1: at most Y bytes.
            new: Metadata[Timestamp] = _decode(
                data, self.limits, self.encoding, role, self.limits.bytes_for_role(role)
            )
            # §5.4.4.4 step 2: a threshold of the timestamp keys of the latest root.
            keys, entry = self.root.signed.role_keys(role)
            self._check_signed(new, data, keys, entry.keyids, entry.threshold, role)
            trusted = self.timestamp
            if trusted is not None and new.signed.version == trusted.signed.version:
                # §5.4.4.4 step 3 / TUF 5.4.3: an equal version is not an update; keep the
                # trusted one (python-tuf's EqualVersionNumberError), which must be fresh
                check_not_expired(trusted.signed, now, role=role)
                if _payload(new) != _payload(trusted):
                    self.timestamp_kept = (
                        f"timestamp version {trusted.signed.version} was served with another "
                        "signed part; the trusted one is kept"
                    )
                return trusted
            if trusted is not None:
                # §5.4.4.4 step 3: the version must not decrease (rollback).
                if new.signed.version < trusted.signed.version:
                    raise RollbackAttack(
                        f"timestamp version {new.signed.version} is below the trusted "
                        f"{trusted.signed.version}"
                    )
                # the snapshot it names must not go back either (TUF §5.4.3.3)
                if new.signed.snapshot_meta.version < trusted.signed.snapshot_meta.version:
                    raise RollbackAttack(
                        f"timestamp names snapshot {new.signed.snapshot_meta.version}, "
                        f"below the trusted {trusted.signed.snapshot_meta.version}"
                    )
            if (
                self.snapshot is not None
                and new.signed.snapshot_meta.version < self.snapshot.signed.version
            ):
                raise RollbackAttack(
                    f"timestamp names snapshot {new.signed.snapshot_meta.version}, "
                    f"below the trusted snapshot {self.snapshot.signed.version}"
                )
            # §5.4.4.4 step 4: not expired (freeze).
            check_not_expired(new.signed, now, role=role)
        except UptaneError as e:
            raise self._err(e, role) from None
        self.timestamp = new
        self.raw[role] = bytes(data)
        return new

    def update_snapshot(self, data: bytes, now: datetime) -> Metadata[Snapshot]:
        """§5.4.4.5: length/hashes/version as in timestamp, threshold, no targets entry
        dropped or rolled back, not expired."""
        role = "snapshot"
        try:
            ts = self.timestamp
            if ts is None:
                raise MixAndMatchAttack("no trusted timestamp to bind the snapshot to")
            check_not_expired(ts.signed, now, role="timestamp")
            meta = ts.signed.snapshot_meta
            # §5.4.4.5 step 1: at most the length the timestamp lists (or the cap).
            cap = _role_cap(self.limits, role, meta.length)
            if len(data) > cap:
                raise EndlessDataAttack(f"{len(data)} bytes exceeds the {cap}-byte cap")
            # §5.4.4.5 step 2: hashes and version match the timestamp (mix-and-match).
            check_meta_file(data, meta, role=role)
            new: Metadata[Snapshot] = _decode(data, self.limits, self.encoding, role, cap)
            if new.signed.version != meta.version:
                raise MixAndMatchAttack(
                    f"snapshot version {new.signed.version}, timestamp lists {meta.version}"
                )
            # §5.4.4.5 step 3: a threshold of the snapshot keys of the latest root.
            keys, entry = self.root.signed.role_keys(role)
            self._check_signed(new, data, keys, entry.keyids, entry.threshold, role)
            trusted = self.snapshot
            if trusted is not None:
                # §5.4.4.5 step 4: the version must not decrease (rollback).
                if new.signed.version < trusted.signed.version:
                    raise RollbackAttack(
                        f"snapshot version {new.signed.version} is below the trusted "
                        f"{trusted.signed.version}"
                    )
                for name, old in trusted.signed.meta.items():
                    cur = new.signed.meta.get(name)
                    # §5.4.4.5 step 6: no targets file listed before is dropped.
                    if cur is None:
                        raise RollbackAttack(f"snapshot dropped {name[:64]!r}")
                    # §5.4.4.5 step 5: no targets file version goes back.
                    if cur.version < old.version:
                        raise RollbackAttack(
                            f"snapshot lists {name[:64]!r} at {cur.version}, "
                            f"below the trusted {old.version}"
                        )
            # §5.4.4.5 step 7: not expired (freeze).
            check_not_expired(new.signed, now, role=role)
        except UptaneError as e:
            raise self._err(e, role) from None
        self.snapshot = new
        self.raw[role] = bytes(data)
        self._signed_under[role] = (self.root, new)
        return new

    def _snapshot_entry(self, role: str, now: datetime) -> MetaFile:
        snap = self.snapshot
        if snap is None:
            raise MixAndMatchAttack(f"no trusted snapshot to bind {role} to")
        check_not_expired(snap.signed, now, role="snapshot")
        entry = snap.signed.role_meta(role)
        if entry is None:
            raise MixAndMatchAttack(f"the snapshot does not list {role[:64]!r}")
        return entry

    def update_targets(self, data: bytes, now: datetime) -> Metadata[Targets]:
        """§5.4.4.6: version == snapshot entry (when a snapshot is trusted), threshold,
        version >= trusted, not expired. On the Director: no delegations.

        Full verification always binds to the snapshot here: a RepositoryTrust without a
        trusted snapshot refuses targets (partial verification lives in
        :mod:`uptane.partial`)."""
        role = "targets"
        try:
            entry = self._snapshot_entry(role, now)
            keys, rentry = self.root.signed.role_keys(role)
            new = verify_targets_bytes(
                data,
                role=role,
                keys=keys,
                keyids=rentry.keyids,
                threshold=rentry.threshold,
                trusted=self.targets,
                snapshot_meta=entry,
                now=now,
                limits=self.limits,
                encoding=self.encoding,
                repository=self.name,
            )
            # §5.4.4.6 steps 6–8 (Director only).
            if self.is_director:
                check_director_targets(
                    new.signed,
                    vehicle_id=self.vehicle_id,
                    ecu_ids=self.ecu_ids,
                    repository=self.name,
                )
        except UptaneError as e:
            raise self._err(e, role) from None
        self.targets = new
        self.raw[role] = bytes(data)
        self._signed_under[role] = (self.root, new)
        self._remember(role, data, keys, rentry.keyids, rentry.threshold)
        return new

    def _targets_of(self, role: str) -> Metadata[Targets] | None:
        return self.targets if role == "targets" else self.delegated.get(role)

    def _delegation_keys(self, parent: str, role: str) -> tuple[dict[str, Key], list[str], int]:
        """Keys, key ids and threshold that ``parent`` delegates ``role`` with: a listed
        delegation, a TAP 3 multi-role entry, or a succinct hash bin."""
        p = self._targets_of(parent)
        if p is None or p.signed.delegations is None:
            raise UnknownRole(f"{parent[:64]!r} does not delegate {role[:64]!r}")
        dels = p.signed.delegations
        for d in dels.roles or []:
            if d.name == role:
                return dels.keys, d.keyids, d.threshold
        for d in dels.roles or []:
            for ref in d.multi_roles or []:
                if ref.name == role:
                    return dels.keys, ref.keyids, ref.threshold
        sr = dels.succinct_roles
        if sr is not None and sr.is_bin_name(role):
            return dels.keys, sr.keyids, sr.threshold
        raise UnknownRole(f"{parent[:64]!r} does not delegate {role[:64]!r}")

    def _verify_delegated(
        self,
        role: str,
        data: bytes,
        keys: Mapping[str, Key],
        keyids: list[str],
        threshold: int,
        now: datetime,
    ) -> Metadata[Targets]:
        if role in TOP_LEVEL_ROLES:
            raise MalformedInput(f"a delegated role may not be called {role!r}")
        entry = self._snapshot_entry(role, now)
        new = verify_targets_bytes(
            data,
            role=role,
            keys=keys,
            keyids=keyids,
            threshold=threshold,
            trusted=self.delegated.get(role),
            snapshot_meta=entry,
            now=now,
            limits=self.limits,
            encoding=self.encoding,
            repository=self.name,
        )
        self.delegated[role] = new
        self.raw[role] = bytes(data)
        self._remember(role, data, keys, keyids, threshold)
        return new

    def update_delegated(
        self, role: str, parent: str, data: bytes, now: datetime
    ) -> Metadata[Targets]:
        """§5.4.4.7: a delegated targets role, checked against its parent's delegation
        (keys, threshold) and the snapshot entry."""
        try:
            if self.is_director:
                raise DirectorDelegation("the Director does not delegate")
            keys, keyids, threshold = self._delegation_keys(parent, role)
            return self._verify_delegated(role, data, keys, keyids, threshold, now)
        except UptaneError as e:
            raise self._err(e, role) from None

    # --- orchestration (I/O through the source) -------------------------------------------

    def _fetch(
        self, source: MetadataSource, role: str, version: int | None, max_bytes: int
    ) -> bytes:
        data = source.fetch_metadata(role, version, max_bytes)
        if data is None:
            name = role if version is None else f"{version}.{role}"
            raise DropRequestAttack(
                f"{name[:80]} is not available", repository=self.name, role=role
            )
        if len(data) > max_bytes:  # a source that ignored its cap
            raise EndlessDataAttack(
                f"{len(data)} bytes exceeds the {max_bytes}-byte cap",
                repository=self.name,
                role=role,
            )
        return data

    def _version_for(self, version: int) -> int | None:
        """File naming (§5.2.7 / TUF): versioned names with consistent snapshots."""
        return version if self.root.signed.consistent_snapshot else None

    def _snapshot_current(self, now: datetime) -> bool:
        """The trusted snapshot is the one the trusted timestamp names, and fresh."""
        ts, snap = self.timestamp, self.snapshot
        if ts is None or snap is None or snap.signed.is_expired(now):
            return False
        meta = ts.signed.snapshot_meta
        if snap.signed.version != meta.version:
            return False
        try:
            check_meta_file(self.raw["snapshot"], meta, role="snapshot")
            self._check_still_signed(snap, "snapshot")
        except UptaneError:
            return False
        return True

    def _check_still_signed(self, md: Metadata[Any], role: str) -> None:
        """A file trusted earlier must still meet the *current* root's keys and threshold
        before it is reused (a root may have rotated the role's keys since).

        Unless this object already checked this very file against this very root (the
        same objects: no root update since, which replaces ``root``): the same keys and
        threshold over the same signed bytes give the same answer, so a find right after
        a refresh does not verify the targets signature a second time."""
        checked = self._signed_under.get(role)
        if checked is not None and checked[0] is self.root and checked[1] is md:
            return
        keys, entry = self.root.signed.role_keys(role)
        self._check_signed(md, self.raw[role], keys, entry.keyids, entry.threshold, role)
        self._signed_under[role] = (self.root, md)

    def _targets_current(self, now: datetime) -> bool:
        """The trusted targets is the one the trusted snapshot names, and fresh."""
        snap, tg = self.snapshot, self.targets
        if snap is None or tg is None or tg.signed.is_expired(now):
            return False
        entry = snap.signed.role_meta("targets")
        if entry is None or entry.version != tg.signed.version:
            return False
        try:
            check_meta_file(self.raw["targets"], entry, role="targets")
            self._check_still_signed(tg, "targets")
        except UptaneError:
            return False
        return True

    def refresh(self, source: MetadataSource, now: datetime) -> RefreshResult:
        """The whole top-level update: root loop (capped by ``max_root_rotations``),
        root expiry, timestamp, early stop if unchanged, snapshot, targets."""
        result = RefreshResult()
        # §5.4.4.3 step 2: the N+1 loop, bounded.
        for _ in range(self.limits.max_root_rotations):
            nxt = self.root.signed.version + 1
            data = source.fetch_metadata("root", nxt, self.limits.bytes_for_role("root"))
            if data is None:
                break
            self.update_root(data)
            result.root_rotations += 1
            for r in self.last_rotated:
                if r not in result.keys_rotated:
                    result.keys_rotated.append(r)
        # §5.4.4.3 step 3 (step 4 was done in update_root).
        self.check_root_fresh(now)

        # §5.4.4.4: timestamp, always unversioned.
        cap = self.limits.bytes_for_role("timestamp")
        before = self.timestamp
        ts = self.update_timestamp(self._fetch(source, "timestamp", None, cap), now)
        result.timestamp_changed = ts is not before
        result.timestamp_kept = self.timestamp_kept

        # §5.4.4.2 step 4 (early stop): the snapshot named is the trusted one, and so is the
        # targets it names; nothing new in this repository.
        if self._snapshot_current(now) and self._targets_current(now):
            result.stopped_early = "timestamp unchanged"
            return result

        # §5.4.4.5: snapshot, up to the length the timestamp lists.
        if not self._snapshot_current(now):
            meta = ts.signed.snapshot_meta
            cap = _role_cap(self.limits, "snapshot", meta.length)
            data = self._fetch(source, "snapshot", self._version_for(meta.version), cap)
            self.update_snapshot(data, now)
            result.snapshot_changed = True

        # the targets file the snapshot names is the trusted one: nothing to download
        if self._targets_current(now):
            return result

        # §5.4.4.6: top-level targets, up to the listed length or Z bytes.
        try:
            entry = self._snapshot_entry("targets", now)
        except UptaneError as e:
            raise self._err(e, "targets") from None
        cap = _role_cap(self.limits, "targets", entry.length)
        data = self._fetch(source, "targets", self._version_for(entry.version), cap)
        self.update_targets(data, now)
        result.targets_changed = True
        return result

    def _check_usable(self, now: datetime) -> None:
        """Before a target is trusted for an install, every top-level file must be present
        and fresh (loaded state is previous state, never fresh by itself)."""
        check_not_expired(self.root.signed, now, role="root", repository=self.name)
        for role in ("timestamp", "snapshot", "targets"):
            md = getattr(self, role)
            if md is None:
                raise DropRequestAttack(
                    f"no trusted {role}: refresh first", repository=self.name, role=role
                )
            check_not_expired(md.signed, now, role=role, repository=self.name)
        if not self._targets_current(now):
            raise MixAndMatchAttack(
                "the trusted targets is not the one the snapshot lists: refresh first",
                repository=self.name,
                role="targets",
            )

    def _load_role(
        self,
        role: str,
        keys: Mapping[str, Key],
        keyids: list[str],
        threshold: int,
        s: _Search,
    ) -> Metadata[Targets]:
        """A delegated role for the search: the trusted copy if it is the version the
        snapshot lists (re-checked against these keys), else fetched and verified."""
        try:
            if role in TOP_LEVEL_ROLES:
                raise MalformedInput(f"a delegated role may not be called {role!r}")
            entry = self._snapshot_entry(role, s.now)
            cached = self.delegated.get(role)
            if (
                cached is not None
                and cached.signed.version == entry.version
                and not cached.signed.is_expired(s.now)
            ):
                try:
                    check_meta_file(self.raw[role], entry, role=role)
                    # re-checked against the keys of the delegation that led here now
                    self._check_signed(cached, self.raw[role], keys, keyids, threshold, role)
                except UptaneError:
                    pass  # not reusable: fetch it and check it like any new file
                else:
                    return cached
            cap = _role_cap(self.limits, role, entry.length)
            data = self._fetch(s.source, role, self._version_for(entry.version), cap)
            return self._verify_delegated(role, data, keys, keyids, threshold, s.now)
        except UptaneError as e:
            raise self._err(e, role) from None

    def _resolve(
        self, md: Metadata[Targets], role: str, depth: int, s: _Search
    ) -> TargetFile | None:
        """§5.4.4.7: depth-first from ``md`` (already loaded and checked)."""
        s.active.append(role)
        try:
            return self._resolve_in(md, role, depth, s)
        finally:
            s.active.pop()

    def _resolve_in(
        self, md: Metadata[Targets], role: str, depth: int, s: _Search
    ) -> TargetFile | None:
        # §5.4.4.7 step 2: this file lists the image -> done.
        found = md.signed.targets.get(s.path)
        if found is not None:
            return found
        dels = md.signed.delegations
        if dels is None:
            return None
        if depth >= self.limits.max_delegation_depth:
            raise LimitExceeded(
                f"delegations deeper than {self.limits.max_delegation_depth}",
                repository=self.name,
                role=role,
            )
        # succinct hash bins: exactly one bin can hold the path, and it is terminating.
        if dels.succinct_roles is not None:
            sr = dels.succinct_roles
            child = sr.role_for_target(s.path)
            child_md = self._visit(child, dels.keys, sr.keyids, sr.threshold, s)
            res = None if child_md is None else self._resolve(child_md, child, depth + 1, s)
            if res is None:
                raise _Terminated
            return res
        # §5.4.4.7 step 4: the delegations in listed (priority) order.
        for d in dels.roles or []:
            # step 4.1: path AND hardware id must match.
            if not delegation_applies(d, s.path, s.hardware_id):
                continue
            if d.multi_roles:
                # step 4.2: TAP 3 multi-role delegation (§5.4.4.8).
                res = self._multi_role(d, dels.keys, depth, s)
            else:
                # step 4.3: a normal delegation: resolve from it (step 1 onwards).
                child_md = self._visit(d.name, dels.keys, d.keyids, d.threshold, s)
                res = None if child_md is None else self._resolve(child_md, d.name, depth + 1, s)
            if res is not None:
                return res
            # step 3 / 4.2: a terminating delegation that applies but did not yield the
            # image ends the whole search (TUF semantics: its own delegations were searched).
            if d.terminating:
                raise _Terminated
        # step 4.3: nothing below this file: the caller continues with its next delegation
        # (step 5: at the top level, the image is not found).
        return None

    def _visit(
        self,
        role: str,
        keys: Mapping[str, Key],
        keyids: list[str],
        threshold: int,
        s: _Search,
    ) -> Metadata[Targets] | None:
        if role in s.active:
            # a delegation cycle: this role is already being searched higher up
            s.notes.append(f"delegation cycle through {role[:64]!r}")
            return None
        s.visited += 1
        if s.visited > self.limits.max_delegations_visited:
            raise LimitExceeded(
                f"more than {self.limits.max_delegations_visited} delegated roles visited",
                repository=self.name,
                role=role,
            )
        # step 1: load and check the role; any failure aborts the search.
        return self._load_role(role, keys, keyids, threshold, s)

    def _multi_role(
        self, d: DelegatedRole, keys: Mapping[str, Key], depth: int, s: _Search
    ) -> TargetFile | None:
        """§5.4.4.8: resolve each listed role with its own keys and threshold, group the
        answers by identical metadata, and accept a group of at least
        ``minRolesInAgreement`` roles (the one with the earliest role on a conflict)."""
        answers: list[TargetFile | None] = []
        for ref in d.multi_roles or []:
            # step 1: each role's image metadata, or an error (which counts as no answer).
            try:
                md = self._visit(ref.name, keys, ref.keyids, ref.threshold, s)
                res = None if md is None else self._resolve(md, ref.name, depth + 1, s)
            except LimitExceeded:
                raise
            except (_Terminated, UptaneError) as e:
                s.notes.append(f"{ref.name}: {e}")
                res = None
            answers.append(res)
        need = d.min_roles_in_agreement or len(answers)
        # step 2.1: sets of roles with identical metadata; drop the ones below threshold.
        groups: dict[bytes, list[int]] = {}
        for i, res in enumerate(answers):
            if res is not None:
                groups.setdefault(_target_identity(res), []).append(i)
        agreeing = [idx for idx in groups.values() if len(idx) >= need]
        if not agreeing:
            # step 2.4: no agreeing set meets the threshold.
            s.notes.append(f"multi-role {d.name!r}: fewer than {need} roles agree")
            return None
        # steps 2.2/2.3: on a conflict, the set holding the earliest listed role.
        best = min(agreeing, key=lambda idx: idx[0])
        return answers[best[0]]

    def find_target(
        self,
        path: str,
        source: MetadataSource,
        now: datetime,
        *,
        hardware_id: str | None = None,
    ) -> TargetFile:
        """§5.4.4.7/§5.4.4.8: search targets and delegations depth-first in priority order,
        with terminating roles, paths and hardware ids that must both match, TAP 3
        multi-role agreement, succinct hash bins, and cycle/depth limits. Raises
        TargetNotFound when no role lists ``path``."""
        self._check_usable(now)
        assert self.targets is not None
        s = _Search(path, hardware_id, source, now)
        try:
            res = self._resolve(self.targets, "targets", 0, s)
        except _Terminated:
            res = None
        if res is None:
            why = "; ".join(s.notes)[:400]
            raise TargetNotFound(
                f"no role lists {path[:128]!r}" + (f" ({why})" if why else ""),
                repository=self.name,
                role="targets",
            )
        return res

    def verify_targets_encoding(
        self, data: bytes, encoding: str, now: datetime
    ) -> Metadata[Targets]:
        """The trusted top-level targets as published in another encoding (a Primary
        forwards the Director's DER targets to Secondaries): §5.4.4.6 steps 1, 3 and 5
        against the trusted root's targets keys, and exactly the verified version — any
        other version is a mix-and-match attack."""
        if self.targets is None:
            raise MixAndMatchAttack(
                "no verified targets to compare with", repository=self.name, role="targets"
            )
        keys, entry = self.root.signed.role_keys("targets")
        other = verify_targets_bytes(
            data,
            role="targets",
            keys=keys,
            keyids=entry.keyids,
            threshold=entry.threshold,
            trusted=None,
            snapshot_meta=None,
            now=now,
            limits=self.limits,
            encoding=encoding,
            repository=self.name,
        )
        version = self.targets.signed.version
        if other.signed.version != version:
            raise MixAndMatchAttack(
                f"targets in {encoding} is v{other.signed.version}, the verified one is v{version}",
                repository=self.name,
                role="targets",
            )
        return other

    def state(self) -> dict[str, Any]:
        """Versions of every trusted file, for status displays."""
        out: dict[str, Any] = {"repository": self.name, "root": self.root.signed.version}
        for role in ("timestamp", "snapshot", "targets"):
            md = getattr(self, role)
            out[role] = None if md is None else md.signed.version
        out["delegated"] = {r: md.signed.version for r, md in sorted(self.delegated.items())}
        return out
