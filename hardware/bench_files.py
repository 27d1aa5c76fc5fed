"""The files the bench tool sends an ECU: metadata directories (:func:`load_metadata`),
the image the Director's targets name for an ECU (:func:`assigned_entry`) and where an
image's bytes come from (:class:`ImageSource`: a file, or a member of an offline bundle).
Used by :mod:`hardware.bench` and :mod:`hardware.bench_bundle`."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from uptane.codec import for_filename
from uptane.errors import MalformedInput
from uptane.identity import ImageIdentity
from uptane.limits import PRIMARY
from uptane.metadata import TargetFile, Targets, decode

#: a metadata file's name without its encoding's suffix: ``3.root``, ``targets``
_STEM = re.compile(r"^(?:(\d+)\.)?([A-Za-z0-9_.-]+)$")
_ORDER = {"root": 0, "timestamp": 1, "snapshot": 2, "targets": 3}


@dataclass(frozen=True)
class MetadataFile:
    """One file to send: which repository and role, its encoding and bytes."""

    repository: str
    role: str
    encoding: str
    data: bytes


def _parse_name(name: str) -> tuple[int, str, str] | None:
    """``(version or -1, role, encoding)`` of a metadata file name (``3.root.der``,
    ``targets.json``: any registered codec's suffix); ``None`` for any other file and for
    the map file."""
    try:
        codec = for_filename(name)
    except MalformedInput:
        return None
    m = _STEM.match(name[: -len(codec.suffix)])
    if not m or (m.group(1) is None and m.group(2) == "map"):
        return None
    return (-1 if m.group(1) is None else int(m.group(1))), m.group(2), codec.name


def _repo_files(directory: Path, repository: str, max_bytes: int) -> list[MetadataFile]:
    """A repository's files in the order a Secondary applies them: every root version
    ascending, then timestamp, snapshot, targets, then delegated roles."""
    roots: list[tuple[int, MetadataFile]] = []
    latest: dict[str, tuple[int, MetadataFile]] = {}
    for p in sorted(directory.iterdir()):
        parsed = _parse_name(p.name) if p.is_file() else None
        if parsed is None:
            continue
        version, role, encoding = parsed
        if p.stat().st_size > max_bytes:
            raise ValueError(f"{p} is larger than {max_bytes} bytes")
        f = MetadataFile(repository, role, encoding, p.read_bytes())
        if role == "root":
            if version >= 0 or not roots:
                roots.append((version, f))
            continue
        # the newest version of each other role (the unversioned file wins: it is current)
        prev = latest.get(role)
        if prev is None or version == -1 or (prev[0] != -1 and version > prev[0]):
            latest[role] = (version, f)
    if len(roots) > 1:
        roots = [r for r in roots if r[0] >= 0]
    out = [f for _, f in sorted(roots, key=lambda r: r[0])]
    rest = sorted(latest.values(), key=lambda vf: (_ORDER.get(vf[1].role, 9), vf[1].role))
    return out + [f for _, f in rest]


def load_metadata(
    directory: str | os.PathLike[str],
    *,
    director: str = "director",
    image: str = "image",
    max_bytes: int = PRIMARY.bytes_for_role("targets"),
) -> list[MetadataFile]:
    """The files of a metadata directory in sending order (see the module doc)."""
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"{d} is not a directory")
    if (d / "director").is_dir():
        out: list[MetadataFile] = []
        for name in ("map.json",):
            if (d / name).is_file():
                out.append(
                    MetadataFile(director, "map", for_filename(name).name, (d / name).read_bytes())
                )
        if (d / "image").is_dir():
            out += _repo_files(d / "image", image, max_bytes)
        dfiles = _repo_files(d / "director", director, max_bytes)
        out += [f for f in dfiles if f.role != "targets"]
        out += [f for f in dfiles if f.role == "targets"]
        return out
    files = _repo_files(d, director, max_bytes)
    if not any(f.role == "targets" for f in files):
        raise ValueError(f"{d} holds no Director targets file (targets.der or targets.json)")
    return [f for f in files if f.role in ("root", "targets")]


def assigned_entry(metadata: list[MetadataFile], ecu_serial: str) -> TargetFile | None:
    """The image the Director's targets among ``metadata`` name for ``ecu_serial`` (read,
    not trusted: the ECU verifies them itself), or None."""
    files = [f for f in metadata if f.repository == "director" and f.role == "targets"]
    if not files:
        return None
    f = files[-1]
    md = decode(f.data, PRIMARY, encoding=f.encoding, role_type="targets").signed
    assert isinstance(md, Targets)
    return next((t for t in md.targets.values() if ecu_serial in t.ecu_ids), None)


@dataclass(frozen=True)
class ImageSource:
    """Where an image's bytes come from: a file, or a member of an offline bundle."""

    name: str
    length: int
    open: Callable[[], contextlib.AbstractContextManager[BinaryIO]]

    @classmethod
    def of_file(cls, path: str | os.PathLike[str]) -> ImageSource:
        p = Path(path)
        return cls(p.name, p.stat().st_size, lambda: open(p, "rb"))

    def identity(self, like: TargetFile) -> ImageIdentity:
        """This image's identity under ``like``'s path, with the hashes ``like`` lists."""
        algorithms = {a: hashlib.new(a) for a in like.hashes if a in hashlib.algorithms_available}
        with self.open() as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                for h in algorithms.values():
                    h.update(block)
        return ImageIdentity(
            like.path, self.length, {a: h.hexdigest() for a, h in algorithms.items()}
        )


__all__ = ["ImageSource", "MetadataFile", "assigned_entry", "load_metadata"]
