"""Where the Primary's HTTP requests go: a repository's metadata files
(:class:`HttpMetadataSource`, the core's :class:`uptane.trust.MetadataSource` over a
:class:`~primary.fetcher.Fetcher`) and its target files (:func:`target_url`). Names are
percent-encoded, so no role or target name can leave its directory on the server."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from uptane.errors import UptaneError
from uptane.metadata import JSON
from uptane.paths import encode_name
from uptane.repository import metadata_filename

if TYPE_CHECKING:
    from primary.fetcher import Fetcher


class HttpMetadataSource:
    """A :class:`uptane.trust.MetadataSource` over HTTP: ``base_url/VERSION.ROLE.EXT`` or
    ``base_url/ROLE.EXT``, the role name percent-encoded (``../x`` -> ``..%2Fx``) so it
    cannot leave the metadata directory on the server."""

    def __init__(
        self,
        fetcher: Fetcher,
        base_url: str,
        encoding: str = JSON,
        *,
        repository: str | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.encoding = encoding
        self.repository = repository

    def url_for(self, role: str, version: int | None) -> str:
        return self.base_url + metadata_filename(encode_name(role), version, self.encoding)

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None:
        try:
            return self.fetcher.fetch_bytes(self.url_for(role, version), max_bytes)
        except UptaneError as e:
            raise e.at(repository=self.repository, role=role) from None


def target_url(base_url: str, path: str, hash_prefix: str | None = None) -> str:
    """The URL of target ``path`` under ``base_url``; with consistent snapshots the file
    name gets the hash prefix (``dir/HASH.name``, §5.2.7). Path segments are
    percent-encoded, slashes kept."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    dirname, sep, name = path.rpartition("/")
    if hash_prefix is not None:
        name = f"{hash_prefix}.{name}"
    return base + quote(f"{dirname}{sep}{name}", safe="/")


__all__ = ["HttpMetadataSource", "target_url"]
