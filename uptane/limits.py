"""Resource caps that every decoder, verifier and download in the stack takes.

One frozen :class:`Limits` value is passed down explicitly; nothing reads a global.
``Limits.primary()`` suits a Primary or a server, ``Limits.constrained()`` a small
Secondary. Every check happens *before* the thing it bounds is allocated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from uptane.errors import EndlessDataAttack, LimitExceeded

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

TOP_LEVEL_ROLES = ("root", "timestamp", "snapshot", "targets")


@dataclass(frozen=True)
class Limits:
    """Caps on bytes, counts, lengths and depths. Use the class methods for profiles."""

    #: byte caps per metadata role; delegated targets use ``delegated_targets_bytes``
    role_bytes: dict[str, int] = field(
        default_factory=lambda: {
            "root": 512 * KiB,
            "timestamp": 16 * KiB,
            "snapshot": 2 * MiB,
            "targets": 16 * MiB,
        }
    )
    delegated_targets_bytes: int = 16 * MiB
    map_file_bytes: int = 64 * KiB
    manifest_bytes: int = 1 * MiB
    link_message_bytes: int = 64 * KiB
    image_bytes: int = 4 * GiB

    max_keys: int = 256
    max_signatures: int = 64
    max_roles: int = 64
    max_targets: int = 100_000
    max_hashes: int = 8
    max_delegations: int = 1024
    max_paths: int = 256
    max_hardware_ids: int = 64
    max_ecus: int = 256
    max_custom_items: int = 256
    max_snapshot_entries: int = 100_000

    max_string: int = 4 * KiB
    max_identifier: int = 256
    max_depth: int = 32
    max_root_rotations: int = 256
    max_delegation_depth: int = 32
    max_delegations_visited: int = 4096

    #: the stream chunk size used for images and link transfers
    chunk_size: int = 64 * KiB

    #: slow-retrieval floor: bytes per second averaged over ``speed_window`` seconds
    min_bytes_per_second: int = 1 * KiB
    speed_window: float = 10.0

    @classmethod
    def primary(cls) -> Limits:
        """The default profile, for a Primary, a server or a bench laptop."""
        return cls()

    @classmethod
    def constrained(cls) -> Limits:
        """A small profile for constrained Secondaries (§5.4.4.1 partial verification)."""
        return cls(
            role_bytes={
                "root": 16 * KiB,
                "timestamp": 2 * KiB,
                "snapshot": 16 * KiB,
                "targets": 16 * KiB,
            },
            delegated_targets_bytes=16 * KiB,
            map_file_bytes=4 * KiB,
            manifest_bytes=16 * KiB,
            link_message_bytes=8 * KiB,
            image_bytes=1 * GiB,
            max_keys=16,
            max_signatures=8,
            max_roles=8,
            max_targets=32,
            max_hashes=4,
            max_delegations=16,
            max_paths=16,
            max_hardware_ids=8,
            max_ecus=32,
            max_custom_items=32,
            max_snapshot_entries=32,
            max_string=1 * KiB,
            max_identifier=64,
            max_depth=12,
            max_root_rotations=32,
            max_delegation_depth=4,
            max_delegations_visited=32,
            # 8 KiB: one buffer holds a whole chunk off a constrained link (7,168 image
            # bytes in an 8 KiB message), and hashing in 8 KiB pieces runs at about 0.94 of
            # one-call hashlib where 4 KiB pieces lose about 10 % to per-chunk overhead
            # (bench figure 4); figure 3's budget is 64 KiB plus this one chunk
            chunk_size=8 * KiB,
        )

    @classmethod
    def named(cls, name: str) -> Limits:
        """The profile called ``name`` ("primary" or "constrained"), as config files name it."""
        if name == "primary":
            return cls.primary()
        if name == "constrained":
            return cls.constrained()
        raise ValueError(f"unknown Limits profile {name!r}; use 'primary' or 'constrained'")

    def replace(self, **changes: object) -> Limits:
        """A copy with some caps changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    # --- checks ---------------------------------------------------------------------------

    def bytes_for_role(self, role: str) -> int:
        """The byte cap for a metadata file of ``role`` (a delegated role if not top-level)."""
        return self.role_bytes.get(role, self.delegated_targets_bytes)

    def check_role_size(
        self, role: str, size: int, *, repository: str | None = None, cap: int | None = None
    ) -> None:
        """Refuse metadata longer than its cap (§5.4.4.4 ff.: 'at most Y bytes')."""
        limit = self.bytes_for_role(role) if cap is None else min(cap, self.bytes_for_role(role))
        if size > limit:
            raise EndlessDataAttack(
                f"{size} bytes exceeds the {limit}-byte cap", repository=repository, role=role
            )

    def check_bytes(self, what: str, size: int, cap: int) -> None:
        """Refuse a blob longer than ``cap``."""
        if size > cap:
            raise EndlessDataAttack(f"{what}: {size} bytes exceeds the {cap}-byte cap")

    @staticmethod
    def check_count(what: str, count: int, cap: int) -> None:
        """Refuse more than ``cap`` items of something."""
        if count > cap:
            raise LimitExceeded(f"{what}: {count} items exceeds the cap of {cap}")

    def check_string(self, what: str, value: str | bytes, cap: int | None = None) -> None:
        """Refuse a string longer than ``max_string`` (or ``cap``)."""
        limit = self.max_string if cap is None else cap
        if len(value) > limit:
            raise LimitExceeded(f"{what}: length {len(value)} exceeds the cap of {limit}")


PRIMARY = Limits.primary()
CONSTRAINED = Limits.constrained()
