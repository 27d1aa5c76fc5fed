"""The metadata the Primary forwards to each Secondary (§5.4.2 step 6), in the encoding
that Secondary reads.

- partial verification: the Director's root versions after the first (key rotation) and
  its targets;
- full verification: the map file, then for the Image repository and then the Director
  the root versions after the first, timestamp, snapshot, every delegated role the
  Primary resolved, and targets.

The Director's targets comes last: its arrival starts the Secondary's verification.

The encoding is the one negotiated on the Secondary's link (its configured one, or for a
DER Secondary the DER flavour both ends list: ``compact-der`` when both have it,
:func:`hardware.protocol.negotiate_codec`). The files in the encoding the Primary verified
(``trust.encoding``, JSON) are forwarded as verified. Files in another encoding are
fetched once, at the versions the verified ones name, and kept in the state's forward
store, named with the codec's file suffix (``director.targets.7.cder``); the Director's
targets in that encoding is checked before it is stored or forwarded (signatures of the
trusted targets keys, same version: :meth:`uptane.trust.RepositoryTrust.verify_targets_encoding`);
everything else is verified by the full-verification Secondary itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from primary.config import DIRECTOR, IMAGE, PrimaryConfig, SecondaryConfig
from primary.fetcher import Fetcher
from primary.secondaries import MetadataFile
from primary.sources import HttpMetadataSource
from primary.state import PrimaryState
from primary.timesource import TimeSource
from uptane.codec import codec_for
from uptane.errors import FetchError
from uptane.metadata import JSON
from uptane.trust import RepositoryTrust


class Forwarder:
    """The files to forward for one cycle's verified trust, built once per (mode,
    encoding) and shared by every Secondary that needs the same."""

    def __init__(
        self,
        config: PrimaryConfig,
        state: PrimaryState,
        fetcher: Fetcher,
        trusts: Mapping[str, RepositoryTrust],
        time: TimeSource,
    ) -> None:
        self.config = config
        self.state = state
        self.fetcher = fetcher
        self.trusts = trusts
        self.time = time
        self._cache: dict[tuple[str, str], list[MetadataFile]] = {}

    def files_for(self, cfg: SecondaryConfig, encoding: str | None = None) -> list[MetadataFile]:
        """What the Secondary configured as ``cfg`` needs, in order (see the module doc),
        in ``encoding`` (negotiated on its link; by default the configured one)."""
        encoding = encoding or cfg.encoding
        key = (cfg.mode, encoding)
        if key not in self._cache:
            repos = (DIRECTOR,) if cfg.mode == "partial" else (IMAGE, DIRECTOR)
            files: list[MetadataFile] = []
            if cfg.mode == "full":
                files.append(
                    MetadataFile("map", "map", JSON, self.config.load_map_file().to_json())
                )
            for repo in repos:  # the Director's targets goes last
                trust = self.trusts[repo]
                files += self._roots(trust, encoding)
                roles = ["targets"] if cfg.mode == "partial" else _roles(trust)
                for role in roles:
                    files.append(self._role_file(trust, role, encoding))
            self._cache[key] = files
        return self._cache[key]

    def _roots(self, trust: RepositoryTrust, encoding: str) -> list[MetadataFile]:
        out = []
        for v in range(2, trust.root.signed.version + 1):
            if encoding == trust.encoding and v == trust.root.signed.version:
                data = trust.raw["root"]
            else:
                data = self._fetch(trust, "root", v, encoding)
            out.append(MetadataFile(trust.name, "root", encoding, data))
        return out

    def _role_file(self, trust: RepositoryTrust, role: str, encoding: str) -> MetadataFile:
        if encoding == trust.encoding:  # the verified bytes themselves
            return MetadataFile(trust.name, role, encoding, trust.raw[role])
        md = trust.targets if role == "targets" else getattr(trust, role, None)
        if md is None:
            md = trust.delegated[role]
        version = md.signed.version
        consistent = trust.root.signed.consistent_snapshot and role != "timestamp"
        check = None
        if trust.is_director and role == "targets":

            def check(data: bytes) -> None:
                # the forwarded encoding must be the verified targets (a partial
                # Secondary checks it again)
                trust.verify_targets_encoding(data, encoding, self.time.now())

        data = self._fetch(
            trust, role, version if consistent else None, encoding, version, check=check
        )
        return MetadataFile(trust.name, role, encoding, data)

    def _fetch(
        self,
        trust: RepositoryTrust,
        role: str,
        version: int | None,
        encoding: str,
        label: int | None = None,
        *,
        check: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """A file to forward, from the forward store or fetched once, checked by ``check``
        and then stored."""
        # named by the codec's file suffix (.json, .der, .cder): one name per encoding
        stem = f"{trust.name}.{role}.{version if version is not None else label}"
        name = stem + codec_for(encoding).suffix
        data = self.state.read_forward(name)
        if data is not None:
            return data
        cfg = self.config
        base = cfg.director_metadata_url if trust.name == DIRECTOR else cfg.image_metadata_url
        source = HttpMetadataSource(self.fetcher, base, encoding, repository=trust.name)
        data = source.fetch_metadata(role, version, cfg.limits.bytes_for_role(role))
        if data is None:
            raise FetchError(
                f"{role} v{version or label} in {encoding} not found",
                repository=trust.name,
                role=role,
            )
        if check is not None:
            check(data)
        if role != "timestamp":
            self.state.write_forward(name, data)
        return data


def _roles(trust: RepositoryTrust) -> list[str]:
    top = [r for r in ("timestamp", "snapshot") if r in trust.raw]
    return top + sorted(trust.delegated) + ["targets"]


__all__ = ["Forwarder"]
