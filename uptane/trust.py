"""The per-repository TUF/Uptane client workflow (Uptane §5.4.4.3–§5.4.4.7), sans-I/O.

:class:`RepositoryTrust` holds the trusted metadata of one repository (the Director or the
Image repository) and updates it one file at a time, in the Standard's order:
root (N+1 loop), timestamp, snapshot, targets, delegated targets. Every check cites its
section. Nothing here does I/O: :meth:`RepositoryTrust.refresh` and
:meth:`RepositoryTrust.find_target` get bytes through a :class:`MetadataSource` the caller
supplies (an HTTP fetcher, a directory, a link), and the caller persists ``raw``.

INTERFACE STUB: the signatures and docstrings below are the contract other modules code
against. The implementation fills them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from uptane.limits import Limits
from uptane.metadata import JSON, Metadata, Root, Snapshot, TargetFile, Targets, Timestamp


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
    """What a top-level refresh changed. ``stopped_early`` names the early stop taken
    (§5.4.4.2: 'timestamp unchanged' / 'no new targets'), if any."""

    root_rotations: int = 0
    timestamp_changed: bool = False
    snapshot_changed: bool = False
    targets_changed: bool = False
    stopped_early: str | None = None
    keys_rotated: list[str] = field(default_factory=list)


class RepositoryTrust:
    """Trusted metadata of one repository and the Standard's update steps.

    ``name`` is "director" or "image" (used in errors and in Director-only checks).
    ``encoding`` is JSON or DER; all files of one repository use one encoding.
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
        self, name: str, trusted_root: bytes, limits: Limits, *, encoding: str = JSON
    ) -> None:
        """Start from a provisioned root (§5.4.1). It must be signed by a threshold of its
        own root keys; expiry is not checked here (the root loop does it)."""
        raise NotImplementedError

    @classmethod
    def load(
        cls, name: str, files: dict[str, bytes], limits: Limits, *, encoding: str = JSON
    ) -> RepositoryTrust:
        """Rebuild from persisted ``raw`` files (root required; the rest optional). Each file
        is re-verified against the chain (signatures and bindings) but expired files are
        accepted as *previous* state, so rollback checks still hold after a long offline
        period; they are never trusted for an install until refreshed."""
        raise NotImplementedError

    # --- single steps, each citing its section --------------------------------------------

    def update_root(self, data: bytes) -> Metadata[Root]:
        """§5.4.4.3: accept root version N+1 signed by a threshold of the old AND of the new
        root keys, with exactly version N+1. Expiry is checked after the loop."""
        raise NotImplementedError

    def check_root_fresh(self, now: datetime) -> None:
        """§5.4.4.3: after the loop the final root must not be expired (FreezeAttack).
        If the timestamp/snapshot keys rotated, forget trusted timestamp/snapshot
        (fast-forward recovery)."""
        raise NotImplementedError

    def update_timestamp(self, data: bytes, now: datetime) -> Metadata[Timestamp]:
        """§5.4.4.4: threshold, version >= trusted (== with different content is an
        attack), snapshot version in it >= trusted, not expired."""
        raise NotImplementedError

    def update_snapshot(self, data: bytes, now: datetime) -> Metadata[Snapshot]:
        """§5.4.4.5: length/hashes/version as in timestamp, threshold, no targets entry
        dropped or rolled back, not expired."""
        raise NotImplementedError

    def update_targets(self, data: bytes, now: datetime) -> Metadata[Targets]:
        """§5.4.4.6: version == snapshot entry (when a snapshot is trusted), threshold,
        version >= trusted, not expired. On the Director: no delegations."""
        raise NotImplementedError

    def update_delegated(
        self, role: str, parent: str, data: bytes, now: datetime
    ) -> Metadata[Targets]:
        """§5.4.4.7: a delegated targets role, checked against its parent's delegation
        (keys, threshold) and the snapshot entry."""
        raise NotImplementedError

    # --- orchestration (I/O through the source) -------------------------------------------

    def refresh(self, source: MetadataSource, now: datetime) -> RefreshResult:
        """The whole top-level update: root loop (capped by ``max_root_rotations``),
        root expiry, timestamp, early stop if unchanged, snapshot, targets."""
        raise NotImplementedError

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
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Versions of every trusted file, for status displays."""
        raise NotImplementedError
