"""Helpers for the core tests: in-memory repositories (RepositoryBuilder + InMemorySource)
signed with ed25519 keys, and attacker-side signing. Test modules import it directly
(``from trust_support import make_repo``); ``conftest.py`` wraps it in fixtures."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from uptane.keys import PrivateKey
from uptane.limits import PRIMARY, Limits
from uptane.metadata import JSON, Metadata, Signed, TargetFile
from uptane.repository import InMemorySource, RepositoryBuilder
from uptane.trust import RepositoryTrust

NOW = datetime(2026, 1, 1, tzinfo=UTC)
VIN = "VIN-TEST-0001"
ROLES = ("root", "targets", "snapshot", "timestamp")


@dataclass
class Repo:
    """One in-memory repository, its private keys and a source a client reads from."""

    name: str
    builder: RepositoryBuilder
    keys: dict[str, list[PrivateKey]]
    source: InMemorySource
    extra: dict[str, Any] = field(default_factory=dict)

    def trust(self, limits: Limits = PRIMARY, **kwargs: Any) -> RepositoryTrust:
        """A client provisioned with version 1 of this repository's root."""
        return RepositoryTrust(self.name, self.builder.trusted_root(JSON), limits, **kwargs)

    def publish(self, now: datetime = NOW) -> None:
        self.builder.publish(now)

    def file(self, name: str) -> bytes:
        """The current bytes of a served file, e.g. ``timestamp.json`` or ``2.root.json``."""
        return self.builder.versioned_files(JSON)[name]

    def sign(self, signed: Signed, *signers: PrivateKey) -> bytes:
        """Sign ``signed`` (a copy) with ``signers``: an attacker holding those keys."""
        md: Metadata[Any] = Metadata(copy.deepcopy(signed), encoding=JSON)
        for s in signers:
            md.sign(s)
        return md.to_bytes()

    def current(self, role: str) -> Signed:
        """A copy of the model of ``role`` as last published."""
        return copy.deepcopy(self.builder.role(role))


def make_repo(
    name: str = "image",
    now: datetime = NOW,
    *,
    thresholds: dict[str, int] | None = None,
    keys_per_role: int = 1,
    vehicle_id: str | None = None,
    consistent_snapshot: bool = True,
    expiry: dict[str, timedelta] | None = None,
    targets: list[TargetFile] | None = None,
    encodings: tuple[str, ...] = (JSON,),
) -> Repo:
    """A repository signed with fresh ed25519 keys (``keys_per_role`` per role)."""
    keys = {r: [PrivateKey.generate() for _ in range(keys_per_role)] for r in ROLES}
    b = RepositoryBuilder(
        name,
        dict(keys),  # type: ignore[arg-type]
        now,
        thresholds=thresholds,
        expiry=expiry,
        consistent_snapshot=consistent_snapshot,
        vehicle_id=vehicle_id,
        encodings=encodings,
    )
    for t in targets or []:
        b.add_target(t)
    if targets:
        b.publish(now)
    return Repo(name, b, keys, b.source(encodings[0]))


def director_entry(data: bytes, path: str, ecu_id: str, hardware_id: str, **kw: Any) -> TargetFile:
    """A Director target giving image ``data`` at ``path`` to ``ecu_id``."""
    return TargetFile.from_data(
        path, data, ecu_ids={ecu_id: hardware_id}, hardware_ids=[hardware_id], **kw
    )


def make_two_repos(
    images: dict[str, bytes] | None = None,
    assignments: dict[str, tuple[str, str]] | None = None,
    *,
    vehicle_id: str = VIN,
    now: datetime = NOW,
    release_counter: int | None = None,
) -> tuple[Repo, Repo]:
    """A Director for ``vehicle_id`` and an Image repository, in agreement.

    ``images`` maps a path to image bytes (listed by the Image repository with the hardware
    ids of the ECUs it is assigned to); ``assignments`` maps an ECU id to (path, hardware
    id): the Director lists that image for that ECU. Default: one image ``fw/a.bin`` for
    ``ecu-1`` of hardware ``hw-1``."""
    images = {"fw/a.bin": b"image a"} if images is None else images
    assignments = {"ecu-1": ("fw/a.bin", "hw-1")} if assignments is None else assignments
    hw_by_path: dict[str, list[str]] = {}
    for path, hw in assignments.values():
        hw_by_path.setdefault(path, []).append(hw)
    image_targets = [
        TargetFile.from_data(
            p, d, hardware_ids=sorted(set(hw_by_path.get(p, []))), release_counter=release_counter
        )
        for p, d in images.items()
    ]
    director_targets = [
        director_entry(images[p], p, ecu, hw, release_counter=release_counter)
        for ecu, (p, hw) in assignments.items()
    ]
    image = make_repo("image", now, targets=image_targets)
    director = make_repo("director", now, vehicle_id=vehicle_id, targets=director_targets)
    return director, image
