"""The Director's view of the Image repository: the images it may assign.

The Director reads the Image repository the way a vehicle does, through
:class:`uptane.trust.RepositoryTrust` from a pinned Image-repository root, so an image it
assigns is one the vehicle will find there (same name, length, hashes, hardware ids,
release counter; §5.4.4.2). The metadata comes from an HTTP URL or a directory laid out as
a static repository (``metadata/`` or the metadata directory itself).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from uptane.errors import EndlessDataAttack, TargetNotFound, UptaneError
from uptane.limits import Limits
from uptane.metadata import JSON, TargetFile
from uptane.repository import metadata_filename
from uptane.trust import MetadataSource, RepositoryTrust
from uptane.verify import check_hardware_id


class DirectorySource:
    """Metadata files from a directory (``N.ROLE.json``, ``timestamp.json``)."""

    def __init__(self, directory: Path, encoding: str = JSON) -> None:
        d = Path(directory)
        self.directory = d / "metadata" if (d / "metadata").is_dir() else d
        self.encoding = encoding

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None:
        from uptane.paths import encode_name

        name = metadata_filename(encode_name(role), version, self.encoding)
        path = self.directory / name
        try:
            with path.open("rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        if len(data) > max_bytes:
            raise EndlessDataAttack(f"{name}: more than {max_bytes} bytes", role=role)
        return data


class HttpSource:
    """Metadata files over HTTP from ``BASE/metadata/NAME``, capped while streaming."""

    def __init__(self, base_url: str, encoding: str = JSON, timeout: float = 10.0) -> None:
        self.base = base_url.rstrip("/")
        self.encoding = encoding
        self.client = httpx.Client(timeout=timeout)

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None:
        from uptane.paths import encode_name

        name = metadata_filename(encode_name(role), version, self.encoding)
        with self.client.stream("GET", f"{self.base}/metadata/{name}") as r:
            if r.status_code == 404:
                return None
            r.raise_for_status()
            buf = bytearray()
            for chunk in r.iter_bytes():
                buf.extend(chunk)
                if len(buf) > max_bytes:
                    raise EndlessDataAttack(f"{name}: more than {max_bytes} bytes", role=role)
            return bytes(buf)


def source_for(location: str) -> MetadataSource:
    """An HTTP source for an http(s) URL, else a directory source."""
    if location.startswith(("http://", "https://")):
        return HttpSource(location)
    return DirectorySource(Path(location))


class ImageRepoView:
    """Looks images up in the Image repository, refreshing at most every ``max_age``."""

    def __init__(
        self,
        source: MetadataSource,
        trusted_root: bytes,
        clock: Callable[[], datetime],
        *,
        limits: Limits | None = None,
        max_age: timedelta = timedelta(seconds=30),
    ) -> None:
        self.source = source
        self.limits = limits or Limits.primary()
        self.trust = RepositoryTrust("image", trusted_root, self.limits)
        self.clock = clock
        self.max_age = max_age
        self._refreshed: datetime | None = None
        self._lock = threading.Lock()

    def refresh(self, *, force: bool = False) -> None:
        now = self.clock()
        with self._lock:
            if force or self._refreshed is None or now - self._refreshed >= self.max_age:
                self.trust.refresh(self.source, now)
                self._refreshed = now

    def lookup(self, path: str, hardware_id: str) -> TargetFile:
        """The Image repository's entry for ``path`` as seen by an ECU of ``hardware_id``.
        Raises TargetNotFound if no role lists it, BadHardwareId if it is for other
        hardware."""
        self.refresh()
        with self._lock:
            try:
                tf = self.trust.find_target(
                    path, self.source, self.clock(), hardware_id=hardware_id
                )
            except TargetNotFound:
                # refreshed metadata may list it (a new image published since)
                self.trust.refresh(self.source, self.clock())
                self._refreshed = self.clock()
                tf = self.trust.find_target(
                    path, self.source, self.clock(), hardware_id=hardware_id
                )
        check_hardware_id(tf, hardware_id, repository="image")  # the core's one check
        return tf

    def find(self, path: str, hardware_id: str) -> TargetFile | None:
        """The entry for ``path`` for an ECU of ``hardware_id``, or None when no role lists
        it (or lists it for other hardware), from metadata at most ``max_age`` old: no
        refresh on a miss (a delta looked up while a bundle is signed; issue 17)."""
        self.refresh()
        with self._lock:
            try:
                tf = self.trust.find_target(
                    path, self.source, self.clock(), hardware_id=hardware_id
                )
                check_hardware_id(tf, hardware_id, repository="image")
            except UptaneError:
                return None
        return tf

    @property
    def consistent_snapshot(self) -> bool:
        """Whether the Image repository names its images ``DIR/HASH.NAME`` (§5.2.7)."""
        return bool(self.trust.root.signed.consistent_snapshot)
