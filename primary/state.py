"""The Primary's persistent state, every file replaced atomically (:class:`storage.AtomicStore`).

Layout of the storage directory::

    metadata/director/   trusted Director metadata, one file per role (JSON, as verified)
    metadata/image/      trusted Image-repository metadata, delegated roles included
    metadata/NAME/       any other repository's (TAP 4, ``[[repositories]]``)
    forward/             Director files in DER for partial Secondaries (targets, root.N)
    images/              downloaded images (``HASH.name``); ``*.part`` while downloading
    state/cycle          the cycle record (canonical JSON, below)
    state/time           the latest verified time (signed time, docs/secure-time.md)

The cycle record holds what must survive a ``kill -9``:

- ``installed``: per ECU, the Director entry it runs (what the Primary saw installed);
- ``pending``: per ECU, the approved entry still to deliver, with its step (one of
  :class:`primary.lifecycle.Step`, moved only through that table) and the Director
  targets version it came from;
- ``results``: per ECU, the last outcome (:class:`primary.lifecycle.Outcome`, attack
  code), and the identity of the image last sent to it (``sending``, an
  :class:`uptane.identity.ImageIdentity` as a dict; see :func:`sending_of`);
- ``attacks``: attacks the Primary itself saw since the last manifest was accepted
  (verification failures, slow retrieval): the next manifest carries them;
- ``last_seen``: per Secondary, the last time (``YYYY-MM-DDTHH:MM:SSZ``, the cycle's time)
  it answered with a report that passed its checks; the manifest's ``unreachable_ecus``
  entry for an ECU that does not answer carries it;
- ``last_error``, ``last_cycle``, ``cycles``.

Every change is one :meth:`storage.AtomicStore.write`: a power cut leaves the old record or
the new. Every store here, and the prune of the images, writes through the one
:class:`storage.FileSystem` the state is given (the real disk unless a test wraps it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from primary.lifecycle import Step
from storage import LOCAL, AtomicStore, FileSystem
from uptane.errors import UptaneError
from uptane.identity import ImageIdentity
from uptane.limits import Limits
from uptane.metadata import TargetFile
from uptane.paths import encode_name

#: a repository's name, as its directory under ``metadata/`` (the configuration checks it)
REPOSITORY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

_CYCLE = "cycle"
#: the Primary's latest verified time: JSON {"latest": seconds since the epoch, "source":
#: the time server(s) it came from}
_TIME = "time"


def target_to_dict(t: TargetFile) -> dict[str, Any]:
    return {"path": t.path, "entry": t.to_dict()}


def target_from_dict(d: dict[str, Any], limits: Limits) -> TargetFile:
    return TargetFile.from_dict(d["path"], dict(d["entry"]), limits)


@dataclass
class Pending:
    """One image still to deliver to one ECU."""

    ecu_id: str
    target: TargetFile
    step: Step = Step.APPROVED
    director_version: int = 0
    attempts: int = 0
    #: where to download the image (the Director's URL, or the Image repository's)
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ecu_id": self.ecu_id,
            "target": target_to_dict(self.target),
            "step": self.step.value,
            "director_version": self.director_version,
            "attempts": self.attempts,
            "url": self.url,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], limits: Limits) -> Pending:
        return cls(
            d["ecu_id"],
            target_from_dict(d["target"], limits),
            Step(d["step"]),  # an unknown step is a ValueError: the record is unusable
            d["director_version"],
            d.get("attempts", 0),
            d.get("url"),
        )


@dataclass
class CycleRecord:
    """The small, frequently rewritten part of the state (see the module doc)."""

    installed: dict[str, TargetFile] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    attacks: list[dict[str, Any]] = field(default_factory=list)
    last_error: str | None = None
    last_cycle: str | None = None
    cycles: int = 0
    last_seen: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "installed": {e: target_to_dict(t) for e, t in self.installed.items()},
            "pending": {e: p.to_dict() for e, p in self.pending.items()},
            "results": self.results,
            "attacks": self.attacks,
            "last_error": self.last_error,
            "last_cycle": self.last_cycle,
            "cycles": self.cycles,
            "last_seen": self.last_seen,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], limits: Limits) -> CycleRecord:
        return cls(
            {e: target_from_dict(t, limits) for e, t in d.get("installed", {}).items()},
            {e: Pending.from_dict(p, limits) for e, p in d.get("pending", {}).items()},
            dict(d.get("results", {})),
            list(d.get("attacks", [])),
            d.get("last_error"),
            d.get("last_cycle"),
            int(d.get("cycles", 0)),
            {str(e): str(t) for e, t in dict(d.get("last_seen", {})).items()},
        )


class PrimaryState:
    """Read and write the Primary's state under ``directory`` (see the module doc)."""

    def __init__(self, directory: str | Path, limits: Limits, *, fs: FileSystem = LOCAL) -> None:
        self.directory = Path(directory)
        self.limits = limits
        self.fs = fs
        cap = max(limits.role_bytes.values()) + limits.delegated_targets_bytes
        self._cap = cap
        #: one store per repository (the Director, the Image repository, and any other a
        #: TAP 4 configuration names), made when first used
        self._meta: dict[str, AtomicStore] = {}
        self._forward = AtomicStore(self.directory / "forward", max_bytes=cap, fs=fs)
        self._state = AtomicStore(
            self.directory / "state", max_bytes=limits.manifest_bytes * 4, fs=fs
        )
        self.images_dir = self.directory / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)

    # --- trusted metadata ------------------------------------------------------------------

    def _store(self, repository: str) -> AtomicStore:
        store = self._meta.get(repository)
        if store is None:
            if not REPOSITORY_NAME.match(repository):
                raise UptaneError(f"repository name {repository[:64]!r} is not a directory name")
            store = AtomicStore(
                self.directory / "metadata" / repository, max_bytes=self._cap, fs=self.fs
            )
            self._meta[repository] = store
        return store

    def has_root(self, repository: str) -> bool:
        return self._store(repository).read("root") is not None

    def read_metadata(self, repository: str) -> dict[str, bytes]:
        """Every trusted file of ``repository`` by role name (each capped by its role)."""
        store = self._store(repository)
        out: dict[str, bytes] = {}
        for enc in store.names():
            role = _decode_name(enc)
            data = store.read(role, self.limits.bytes_for_role(role))
            if data is not None:
                out[role] = data
        return out

    def write_metadata(self, repository: str, raw: dict[str, bytes]) -> None:
        """Make the store hold exactly ``raw``: changed files replaced atomically, root first
        (a new root before the files its keys sign), then roles dropped from trust removed.
        A crash in between leaves files that :meth:`RepositoryTrust.load` re-verifies
        against the stored root and drops if they no longer verify."""
        store = self._store(repository)
        current = self.read_metadata(repository)
        order = sorted(raw, key=lambda r: (r != "root", r))
        for role in order:
            if current.get(role) != raw[role]:
                store.write(role, raw[role])
        for role in current:
            if role not in raw:
                store.delete(role)

    def write_root(self, repository: str, data: bytes) -> None:
        """Provisioning: the initial trusted root (drops every other trusted file)."""
        self.write_metadata(repository, {"root": data})

    # --- files forwarded to Secondaries ---------------------------------------------------------

    def read_forward(self, name: str) -> bytes | None:
        return self._forward.read(name)

    def write_forward(self, name: str, data: bytes) -> None:
        if self._forward.read(name) != data:
            self._forward.write(name, data)

    # --- images -------------------------------------------------------------------------

    def image_path(self, target: TargetFile) -> Path:
        """Where the image for ``target`` lives: named by its hash, so two versions of the
        same file name never share a file (and a resumed part belongs to one image)."""
        alg = "sha256" if "sha256" in target.hashes else sorted(target.hashes)[0]
        digest = target.hashes[alg].lower()[:64]
        return self.images_dir / f"{digest}.{encode_name(target.path)}"[:240]

    def prune_images(self, keep: list[TargetFile]) -> None:
        """Delete downloaded images (and parts) no pending install needs, then fsync the
        directory once so the deletions are durable."""
        wanted = {self.image_path(t).name for t in keep}
        wanted |= {n + ".part" for n in wanted}
        self.fs.check()
        gone = False
        for p in sorted(self.images_dir.iterdir()):  # one order: the same write points
            if p.is_file() and p.name not in wanted:
                self.fs.unlink(p)
                gone = True
        if gone:
            self.fs.sync_dir(self.images_dir)

    # --- the cycle record --------------------------------------------------------------------

    def load_cycle(self) -> CycleRecord:
        d = self._state.read_json(_CYCLE, self.limits)
        if d is None:
            return CycleRecord()
        try:
            return CycleRecord.from_dict(d, self.limits)
        except (KeyError, TypeError, ValueError, UptaneError) as e:
            raise UptaneError(f"the stored cycle record is unusable: {e}") from None

    def save_cycle(self, record: CycleRecord) -> None:
        self._state.write_json(_CYCLE, record.to_dict())

    # --- the latest verified time ------------------------------------------------------------

    def load_time(self) -> int | None:
        """The latest time the Primary verified from its time servers (None: never, or an
        unreadable record: the clock policy then takes the first verified time)."""
        latest, _source = self.time_record()
        return latest

    def time_record(self) -> tuple[int | None, str | None]:
        """The latest verified time and the time server(s) it came from (a record written
        before the source was kept has none)."""
        try:
            d = self._state.read_json(_TIME, self.limits)
        except UptaneError:
            return None, None
        if not isinstance(d, dict):
            return None, None
        latest, source = d.get("latest"), d.get("source")
        if not isinstance(latest, int) or isinstance(latest, bool):
            return None, None
        return latest, source if isinstance(source, str) else None

    def save_time(self, latest: int, source: str | None = None) -> None:
        """Keep a new latest verified time and where it came from (one write, only when
        the time moved)."""
        if latest != self.load_time():
            record: dict[str, Any] = {"latest": latest}
            if source is not None:
                record["source"] = source[:200]
            self._state.write_json(_TIME, record)


def image_of(entry: dict[str, Any], key: str) -> ImageIdentity | None:
    """The image identity stored in a ``results`` entry under ``key`` (``sending``: the
    image whose transfer this Primary last started to the ECU; ``image``: the image it
    refused), or None.

    Records written before image identities were stored hold a string there (path,
    length and hashes joined): it reads as None, "unknown image". That is safe: an
    unknown ``sending`` image is never resumed, so the next transfer to that ECU sends
    the metadata again and restarts the image at byte 0; an unknown refused image
    restarts the refusal count, so the image is offered at most ``MAX_REFUSALS`` more
    times."""
    return ImageIdentity.from_dict(entry.get(key))


def _decode_name(encoded: str) -> str:
    return unquote(encoded)
