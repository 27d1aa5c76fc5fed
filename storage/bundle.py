"""The offline update bundle file (issue 18): what an OEM carries to a vehicle that has
no connection, on a USB stick, and what the vehicle's Primary or a bench tool reads.

A bundle is an ordinary (uncompressed, POSIX) tar file, named ``*.uptane.tar``, whose
first member is ``bundle.json``, the **manifest of contents**::

    {"format": "uptane-offline-bundle", "version": 1,
     "created": "2026-05-01T10:00:00Z", "expires": "2026-05-08T10:00:00Z",
     "vehicles": {"VIN-1": {"targets_version": 7, "timestamp_version": 31,
                            "images": ["brakes/fw-2.bin"]}},
     "files": [{"name": "vehicles/VIN-1/director/7.targets.json", "length": 912,
                "sha256": "..."}, ...]}

and whose other members are exactly the files it lists:

- ``vehicles/VIN/director/NAME``: the Director's metadata for that vehicle, named as the
  Director serves it (``N.root.EXT`` for every root version, ``timestamp.EXT``,
  ``N.snapshot.EXT``, ``N.targets.EXT``; JSON and DER);
- ``image/metadata/NAME``: the Image repository's metadata, named as it serves it;
- ``image/targets/PATH``: the images, named as the Image repository serves them;
- ``vehicles/VIN/targets/PATH``: an image the Director's targets give their own URL for
  (an image encrypted for that vehicle's ECU).

**Nothing in the file is trusted because it is in the file.** The reader verifies the
Uptane metadata against the roots it already holds, and every image against that
metadata, exactly as online. The manifest of contents is unsigned; its lengths and
SHA-256 digests only tell a damaged copy from a good one early, with a clear error
(:class:`uptane.errors.BadHash`). A reader refuses (:class:`uptane.errors.MalformedInput`)
a member that is not a regular file, a name outside the layout (absolute, ``..``, odd
characters), a member the manifest does not list or one it lists that is missing, and
anything over its caps (:class:`uptane.errors.EndlessDataAttack`).

The same layout also works unpacked: a directory holding ``bundle.json`` and the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from storage.atomic import _replace, read_capped
from storage.fs import LOCAL, File, FileSystem, StrPath
from uptane.errors import BadHash, EndlessDataAttack, MalformedInput

FORMAT = "uptane-offline-bundle"
VERSION = 1
CONTENTS = "bundle.json"
#: what a bundle file's name ends with
SUFFIX = ".uptane.tar"
#: caps: the manifest of contents, how many members, a member's name
MAX_CONTENTS = 4 * 1024 * 1024
MAX_MEMBERS = 20_000
MAX_NAME = 512
#: a member's name: segments of letters, digits and ``._+-``, joined by ``/``; no segment
#: that is ``.`` or ``..``
_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*(/[A-Za-z0-9_+-][A-Za-z0-9._+-]*)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_name(name: str) -> str:
    """``name`` if it is a member name of the layout; MalformedInput otherwise."""
    if len(name) > MAX_NAME or not _NAME.match(name) or ".." in name.split("/"):
        raise MalformedInput(f"bundle member name {name[:80]!r} is not allowed")
    return name


@dataclass(frozen=True)
class Entry:
    """One listed member: its name, length and SHA-256."""

    name: str
    length: int
    sha256: str


@dataclass
class Contents:
    """The manifest of contents (``bundle.json``)."""

    created: str
    expires: str
    vehicles: dict[str, dict[str, Any]]
    files: dict[str, Entry] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "expires": self.expires,
            "vehicles": self.vehicles,
            "files": [
                {"name": e.name, "length": e.length, "sha256": e.sha256}
                for e in self.files.values()
            ],
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Contents:
        """Parse and check a manifest of contents (bounded, strict)."""
        if len(data) > MAX_CONTENTS:
            raise EndlessDataAttack(f"{CONTENTS} is larger than {MAX_CONTENTS} bytes")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise MalformedInput(f"{CONTENTS} is not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise MalformedInput(f"{CONTENTS} is not an {FORMAT} manifest")
        if doc.get("version") != VERSION:
            raise MalformedInput(f"{CONTENTS}: format version {doc.get('version')!r} is unknown")
        created, expires, vehicles = doc.get("created"), doc.get("expires"), doc.get("vehicles")
        files = doc.get("files")
        if not (isinstance(created, str) and isinstance(expires, str)):
            raise MalformedInput(f"{CONTENTS}: created and expires must be strings")
        if not isinstance(vehicles, dict) or not all(
            isinstance(v, dict) for v in vehicles.values()
        ):
            raise MalformedInput(f"{CONTENTS}: vehicles must map each VIN to an object")
        if not isinstance(files, list) or len(files) > MAX_MEMBERS:
            raise MalformedInput(f"{CONTENTS}: files must be a list of at most {MAX_MEMBERS}")
        out = cls(created, expires, vehicles)
        for f in files:
            entry = _entry(f)
            if entry.name in out.files or entry.name == CONTENTS:
                raise MalformedInput(f"{CONTENTS} lists {entry.name!r} twice")
            out.files[entry.name] = entry
        return out


def _entry(f: Any) -> Entry:
    if not isinstance(f, dict) or set(f) != {"name", "length", "sha256"}:
        raise MalformedInput(f"{CONTENTS}: each file is {{name, length, sha256}}")
    name, length, digest = f["name"], f["length"], f["sha256"]
    if not isinstance(name, str) or type(length) is not int or length < 0:
        raise MalformedInput(f"{CONTENTS}: a file entry has a bad name or length")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise MalformedInput(f"{CONTENTS}: {name[:80]!r} has a bad sha256")
    return Entry(check_name(name), length, digest)


# --- writing --------------------------------------------------------------------------------


class _Sink(io.RawIOBase):
    """A :class:`storage.File` as the write-only stream tarfile writes to."""

    def __init__(self, f: File) -> None:
        self.f = f

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.f.write(data)
        return len(data)


def write_bundle(
    path: StrPath,
    contents: Contents,
    members: list[tuple[str, bytes | Path]],
    *,
    fs: FileSystem = LOCAL,
) -> Contents:
    """Write a bundle to ``path`` atomically: ``members`` (a name and its bytes, or the
    file that holds them: images are streamed, never held whole) listed in ``contents``
    (their entries are filled in here), ``bundle.json`` first. Returns ``contents``."""
    names = [check_name(n) for n, _ in members]
    if len(set(names)) != len(names) or CONTENTS in names:
        raise MalformedInput("a bundle member is named twice")
    contents.files = {n: _digest(n, src) for n, src in members}
    head = contents.to_bytes()
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def fill(f: File) -> None:
        with tarfile.open(fileobj=_Sink(f), mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, CONTENTS, len(head), io.BytesIO(head))
            for name, src in members:
                length = contents.files[name].length
                with _source(src) as stream:
                    _add(tar, name, length, stream)

    _replace(dest, 0o644, fill, fs, dest.name)
    return contents


def _add(tar: tarfile.TarFile, name: str, length: int, stream: IO[bytes]) -> None:
    info = tarfile.TarInfo(name)
    info.size = length
    info.mode = 0o644
    tar.addfile(info, stream)


@contextlib.contextmanager
def _source(src: bytes | Path) -> Iterator[IO[bytes]]:
    if isinstance(src, Path):
        with open(src, "rb") as f:
            yield f
    else:
        yield io.BytesIO(src)


def _digest(name: str, src: bytes | Path) -> Entry:
    h = hashlib.sha256()
    length = 0
    with _source(src) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            length += len(block)
    return Entry(name, length, h.hexdigest())


# --- reading --------------------------------------------------------------------------------


class Bundle:
    """A bundle opened for reading: a ``*.uptane.tar`` file or an unpacked directory.

    :meth:`read` and :meth:`stream` give a listed member's bytes, checked against the
    manifest of contents (length and SHA-256: :class:`uptane.errors.BadHash` when they
    differ); :meth:`has` says whether the bundle lists a name."""

    def __init__(self, path: StrPath) -> None:
        self.path = Path(path)
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        head = self._dir_contents() if self.path.is_dir() else self._tar_contents()
        self.contents = Contents.from_bytes(head)
        self._check_members()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def _tar_contents(self) -> bytes:
        try:
            self._tar = tarfile.open(self.path, mode="r:")  # noqa: SIM115 (closed by close())
        except (tarfile.TarError, OSError) as e:
            raise MalformedInput(f"{self.path} is not a bundle (a tar file): {e}") from None
        first = True
        for m in self._tar:  # read member by member: bounded before anything is kept
            if len(self._members) >= MAX_MEMBERS + 1:
                raise EndlessDataAttack(f"{self.path}: more than {MAX_MEMBERS} members")
            if first and m.name != CONTENTS:
                raise MalformedInput(f"{self.path}: the first member is not {CONTENTS}")
            first = False
            if not m.isreg():
                raise MalformedInput(f"{self.path}: member {m.name[:80]!r} is not a file")
            if m.name in self._members:
                raise MalformedInput(f"{self.path}: member {m.name[:80]!r} appears twice")
            self._members[m.name] = m
        if first:
            raise MalformedInput(f"{self.path} is an empty tar file")
        head = self._members.pop(CONTENTS)
        if head.size > MAX_CONTENTS:
            raise EndlessDataAttack(f"{CONTENTS} is larger than {MAX_CONTENTS} bytes")
        f = self._tar.extractfile(head)
        assert f is not None
        return f.read()

    def _dir_contents(self) -> bytes:
        try:
            return read_capped(self.path / CONTENTS, MAX_CONTENTS)
        except FileNotFoundError:
            raise MalformedInput(f"{self.path} holds no {CONTENTS}: not a bundle") from None

    def _check_members(self) -> None:
        listed = self.contents.files
        if self._tar is not None:
            extra = sorted(set(self._members) - set(listed))
            if extra:
                raise MalformedInput(f"{self.path}: member {extra[0][:80]!r} is not listed")
        for name in listed:
            if self._size(name) is None:
                raise MalformedInput(f"{self.path}: listed member {name[:80]!r} is missing")

    def _size(self, name: str) -> int | None:
        if self._tar is not None:
            m = self._members.get(name)
            return None if m is None else m.size
        p = self.path / name
        try:
            st = os.lstat(p)
        except OSError:
            return None
        # a regular file at exactly that place: no link anywhere on the way out of the bundle
        inside = Path(os.path.realpath(p)) == self.path.resolve() / name
        if not stat.S_ISREG(st.st_mode) or not inside:
            raise MalformedInput(f"{self.path}: {name[:80]!r} is not a regular file")
        return st.st_size

    # --- members ----------------------------------------------------------------------

    @property
    def vins(self) -> list[str]:
        return sorted(self.contents.vehicles)

    def has(self, name: str) -> bool:
        return name in self.contents.files

    def entry(self, name: str) -> Entry:
        e = self.contents.files.get(name)
        if e is None:
            raise MalformedInput(f"the bundle holds no {name[:80]!r}")
        return e

    def read(self, name: str, cap: int) -> bytes:
        """A listed member's bytes (at most ``cap``), checked."""
        e = self.entry(name)
        if e.length > cap:
            raise EndlessDataAttack(f"bundle member {name[:80]!r} is larger than {cap} bytes")
        with self.stream(name) as f:
            return f.read()

    @contextlib.contextmanager
    def stream(self, name: str) -> Iterator[BinaryIO]:
        """A listed member as a stream; reading it to its end checks its length and
        SHA-256 (BadHash when they are not the listed ones)."""
        e = self.entry(name)
        if self._size(name) != e.length:
            raise BadHash(f"bundle member {name[:80]!r} is not the length its manifest lists")
        raw: IO[bytes]
        if self._tar is not None:
            got = self._tar.extractfile(self._members[name])
            assert got is not None
            raw = got
        else:
            raw = open(self.path / name, "rb")  # noqa: SIM115 (closed below)
        try:
            yield _Checked(raw, e)  # type: ignore[misc]
        finally:
            raw.close()


class _Checked(io.RawIOBase):
    """A member's stream that checks its SHA-256 when it reaches the listed length."""

    def __init__(self, raw: IO[bytes], entry: Entry) -> None:
        self.raw, self.e = raw, entry
        self.h = hashlib.sha256()
        self.done = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = self.e.length - self.done
        data = self.raw.read(left if n is None or n < 0 else min(n, left))
        self.h.update(data)
        self.done += len(data)
        if self.done == self.e.length and not getattr(self, "_checked", False):
            self._checked = True
            if self.h.hexdigest() != self.e.sha256:
                raise BadHash(f"bundle member {self.e.name[:80]!r} does not match its manifest")
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def find_bundles(where: StrPath) -> list[Path]:
    """The bundles at ``where``: that file, that unpacked directory, or the
    ``*.uptane.tar`` files (and unpacked bundles) directly in that directory (a mounted
    USB stick), sorted by name."""
    p = Path(where)
    if p.is_file() or (p / CONTENTS).is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such file or directory")
    found = [q for q in sorted(p.iterdir()) if q.name.endswith(SUFFIX) and q.is_file()]
    found += [q for q in sorted(p.iterdir()) if q.is_dir() and (q / CONTENTS).is_file()]
    return found


__all__ = [
    "CONTENTS",
    "FORMAT",
    "SUFFIX",
    "Bundle",
    "Contents",
    "Entry",
    "check_name",
    "find_bundles",
    "write_bundle",
]
