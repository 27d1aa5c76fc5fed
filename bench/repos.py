"""The repositories the benchmarks run against, built with the project's own
:class:`uptane.repository.RepositoryBuilder` (ed25519 keys, consistent snapshots).

- :func:`image_repository`: an Image repository of ``n_targets`` targets split between the
  top-level targets role and two delegated roles (``vendor-a`` for ``a/*``, ``vendor-b``
  for ``b/*``); :func:`write_static` lays it out as a static web server serves it.
- :func:`director_repository`: a Director repository for one vehicle whose targets assign
  images to ECUs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from uptane.keys import PrivateKey
from uptane.metadata import JSON, DelegatedRole, TargetFile
from uptane.repository import RepositoryBuilder

ROLES = ("root", "targets", "snapshot", "timestamp")
DELEGATED = ("vendor-a", "vendor-b")


def now() -> datetime:
    """The repositories are signed relative to the real clock (the clients read it)."""
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class ImageRepo:
    builder: RepositoryBuilder
    keys: dict[str, list[PrivateKey]]
    #: the bytes of the targets that are actually served (the rest exist only as metadata)
    blobs: dict[str, bytes] = field(default_factory=dict)
    #: path of the target the benchmarks download (listed by ``vendor-b``)
    download: str = ""


def _fake_target(path: str, rng: random.Random, hardware_id: str) -> TargetFile:
    # metadata for an image that is never served: realistic sizes and digests
    return TargetFile(
        path,
        rng.randrange(1 << 16, 1 << 24),
        {"sha256": rng.randbytes(32).hex()},
        hardware_ids=[hardware_id],
        release_counter=rng.randrange(1, 100),
    )


def image_repository(
    n_targets: int = 1000,
    *,
    download_size: int = 64 * 1024,
    served: dict[str, bytes] | None = None,
    seed: int = 8,
) -> ImageRepo:
    """An Image repository of ``n_targets`` targets: a third in the top-level role, a third
    in each delegated role. ``served`` adds real images (path -> bytes) to ``vendor-b``."""
    rng = random.Random(seed)
    keys = {r: [PrivateKey.generate()] for r in ROLES}
    b = RepositoryBuilder("image", dict(keys), now(), encodings=(JSON,))  # type: ignore[arg-type]
    dkeys = {name: PrivateKey.generate() for name in DELEGATED}
    for name, prefix in zip(DELEGATED, ("a", "b"), strict=True):
        b.delegate("targets", DelegatedRole(name, [], 1, paths=[f"{prefix}/*"]), [dkeys[name]])
    repo = ImageRepo(b, keys)
    blobs = dict(served or {})
    download = "b/ecu-b-firmware.bin"
    blobs.setdefault(download, rng.randbytes(download_size))
    per_role = {
        "targets": "", "vendor-a": "a/", "vendor-b": "b/",
    }  # fmt: skip
    fake = max(0, n_targets - len(blobs))
    roles = list(per_role)
    for i in range(fake):
        role = roles[i % 3]
        path = f"{per_role[role]}image-{i:05d}.bin"
        b.add_target(_fake_target(path, rng, f"hw-{i % 7}"), role)
    for path, data in blobs.items():
        b.add_target(TargetFile.from_data(path, data, hardware_ids=["hw-b"]), "vendor-b")
    b.publish(now())
    repo.blobs = blobs
    repo.download = download
    return repo


def write_static(builder: RepositoryBuilder, blobs: dict[str, bytes], www: Path) -> None:
    """``www/metadata/[N.]role.json`` and ``www/targets/[dir/]HASH.name``, as served."""
    md = www / "metadata"
    md.mkdir(parents=True, exist_ok=True)
    for name, data in builder.versioned_files(JSON).items():
        (md / name).write_bytes(data)
    for path, data in blobs.items():
        t = TargetFile.from_data(path, data)
        dirname, _, name = path.rpartition("/")
        dest = www / "targets" / dirname / f"{t.hashes['sha256']}.{name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


@dataclass
class DirectorRepo:
    builder: RepositoryBuilder
    keys: dict[str, list[PrivateKey]]
    vehicle_id: str
    ecus: dict[str, str]


def director_repository(
    vehicle_id: str,
    assignments: dict[str, TargetFile],
    ecus: dict[str, str],
    *,
    encodings: tuple[str, ...] = (JSON,),
) -> DirectorRepo:
    """A Director repository whose targets give each ECU (``assignments``: ECU id -> the
    Image repository's entry) its image, with the ECU id and hardware id the Director adds."""
    keys = {r: [PrivateKey.generate()] for r in ROLES}
    b = RepositoryBuilder(
        "director",
        dict(keys),  # type: ignore[arg-type]
        now(),
        vehicle_id=vehicle_id,
        encodings=encodings,
    )
    for ecu, image in assignments.items():
        hw = ecus[ecu]
        b.add_target(
            TargetFile(
                image.path,
                image.length,
                dict(image.hashes),
                hardware_ids=list(image.hardware_ids),
                release_counter=image.release_counter,
                ecu_ids={ecu: hw},
            )
        )
    b.publish(now())
    return DirectorRepo(b, keys, vehicle_id, ecus)
