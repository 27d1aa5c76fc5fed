"""Offline update bundles on the Primary (issue 18): an update carried on a USB stick to a
vehicle with no connection, with every Uptane guarantee of an online cycle.

``uptane-primary import-bundle --config F --bundle PATH [--export DIR]`` opens the bundle
for this vehicle's VIN (a ``*.uptane.tar`` file, an unpacked bundle, or a directory such as
a mounted stick holding them: :func:`storage.bundle.find_bundles`) and runs one update
cycle (:class:`OfflinePrimary`) whose every metadata file and image comes from the bundle
instead of the network (:class:`BundleFetcher`). Nothing else changes:

- full verification (§5.4.4.2) of the Director's and the Image repository's metadata
  starts from the roots this Primary already trusts and follows their root chain in the
  bundle: no trust on first use and no weaker path. A bundle signed by anyone else
  (``bad-signature``/``threshold``), expired (``freeze``), for another vehicle
  (:class:`~uptane.errors.VehicleMismatch`), or older than what the vehicle has
  (``rollback``) is refused with the core's named error, and nothing is installed;
- every image is checked against that metadata (length and every hash) as it is copied
  out of the bundle, then delivered to the Secondaries over their links as in an online
  cycle (each Secondary verifies again);
- after the installs the vehicle version manifest is made as online (every ECU's signed
  report for a fresh nonce) and, with ``--export DIR``, written there for the dealer to
  upload (``uptane-director workshop upload``); otherwise the next online cycle sends a
  fresh one. Either confirms the bundle at the Director.

A refusal is the cycle's error (exit status 1) and, unless the stick simply holds no bundle
for this vehicle, an attack the next manifest reports, as online.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from primary.agent import Primary
from primary.config import DIRECTOR, IMAGE, PrimaryConfig
from primary.cycle import Cycle
from primary.deliver import deliver
from primary.download import download
from primary.fetcher import Fetcher
from primary.manifest import build_manifest, collect_reports, collect_results, sync_time
from primary.secondaries import SecondaryPort
from primary.verify import verify
from storage import LOCAL, FileSystem, atomic_write
from storage.bundle import Bundle, find_bundles
from uptane.codec import codec_for
from uptane.errors import FetchError, UptaneError, VehicleMismatch
from uptane.limits import Limits
from uptane.verify import ImageVerifier

Progress = Callable[[int, int], None]


class BundleFetcher(Fetcher):
    """The Primary's fetcher over an offline bundle: each URL the cycle asks for (under the
    configured Director metadata, Image repository metadata and targets URLs) is a member
    of the bundle; nothing goes to the network. A file the bundle lacks is a 404."""

    def __init__(self, bundle: Bundle, config: PrimaryConfig, limits: Limits) -> None:
        super().__init__(limits, retries=0)
        self.bundle = bundle
        image = config.image_repositories[IMAGE]
        self.prefixes = [
            (config.director_metadata_url, f"vehicles/{config.vin}/director/"),
            (image.metadata_url, "image/metadata/"),
            (image.targets_url, "image/targets/"),
        ]

    def member(self, url: str) -> str | None:
        """The bundle member ``url`` names, or None (a URL under no configured base)."""
        for base, prefix in self.prefixes:
            base = base.rstrip("/") + "/"
            if url.startswith(base):
                return prefix + url[len(base) :]
        return None

    def fetch_bytes(self, url: str, max_bytes: int) -> bytes | None:
        name = self.member(url)
        if name is None or not self.bundle.has(name):
            return None
        return self.bundle.read(name, max_bytes)

    def download_to(
        self,
        url: str,
        path: str | os.PathLike[str],
        length: int,
        verifier: ImageVerifier | None = None,
        *,
        progress: Progress | None = None,
        resume: bool = True,
        part_path: str | os.PathLike[str] | None = None,
        fs: FileSystem = LOCAL,
    ) -> Path:
        """Copy the image ``url`` names out of the bundle into ``path``: through the
        verifier (length and every hash of the verified metadata), then fsynced and renamed
        into place; a wrong one leaves nothing behind."""
        del resume  # a local copy starts over
        self._check_request(url, length, verifier)
        name = self.member(url)
        if name is None or not self.bundle.has(name):
            raise FetchError(f"the bundle holds no image for {url}")
        dest = Path(path)
        part = Path(part_path) if part_path is not None else dest.with_name(dest.name + ".part")
        fs.check()
        fs.unlink(part)
        try:
            with self.bundle.stream(name) as src, fs.create(part, 0o644) as f:
                done = 0
                for chunk in iter(lambda: src.read(self.limits.chunk_size), b""):
                    if verifier is not None:
                        verifier.update(chunk)
                    f.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, length)
                if verifier is not None:
                    verifier.finish()
                f.sync()
        except UptaneError:
            fs.unlink(part)
            raise
        fs.replace(part, dest)
        fs.sync_dir(dest.parent)
        return dest


class OfflinePrimary(Primary):
    """A Primary whose cycle reads an offline bundle: verify, download (from the bundle),
    deliver, collect the reports, then the manifest for the dealer (see the module doc)."""

    def __init__(
        self, config: PrimaryConfig, bundle: Bundle, *, export: Path | None = None, **kw: Any
    ) -> None:
        super().__init__(config, fetcher=BundleFetcher(bundle, config, config.limits), **kw)
        self.bundle = bundle
        self.export = export
        #: where the manifest went (``--export``), once the cycle made it
        self.exported: Path | None = None

    def _cycle(self, cy: Cycle, ports: dict[str, SecondaryPort]) -> None:
        now = sync_time(cy, ports)
        cy.say(f"offline bundle {self.bundle.path.name}, made {self.bundle.contents.created}")
        trusts = verify(cy, now)
        if trusts is None:
            return
        if not download(cy):
            return
        deliver(cy, trusts, ports, self.own, now)
        collect_results(cy, ports)
        for ecu_id, path in sorted(cy.result.installed.items()):
            cy.say(f"{ecu_id}: installed {path}")
        if not cy.record.pending:
            cy.say("nothing pending")
        if self.export is not None:
            self._export(cy, ports)

    def _export(self, cy: Cycle, ports: dict[str, SecondaryPort]) -> None:
        """The vehicle version manifest after the installs, for the dealer to upload."""
        assert self.export is not None
        reports = collect_reports(cy, ports)
        body, encoding = build_manifest(cy, reports, self.own)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{cy.config.vin}-{stamp}.manifest{codec_for(encoding).suffix}"
        dest = self.export / name
        atomic_write(dest, body, mode=0o644, fs=self.fs)
        self.exported = dest
        cy.say(f"manifest exported to {dest}: upload it with `uptane-director workshop upload`")


def open_bundle(where: Path, vin: str) -> Bundle:
    """The bundle for ``vin`` at ``where`` (a file, an unpacked bundle, or a directory of
    them such as a mounted stick; the newest for this VIN when there are several).
    :class:`~uptane.errors.VehicleMismatch` when none is for this vehicle."""
    others: set[str] = set()
    best: tuple[int, Bundle] | None = None
    for path in find_bundles(where):
        b = Bundle(path)
        v = b.contents.vehicles.get(vin)
        if v is None:
            others.update(b.vins)
            b.close()
            continue
        version = int(v.get("timestamp_version", 0))
        if best is None or version > best[0]:
            if best is not None:
                best[1].close()
            best = (version, b)
        else:
            b.close()
    if best is None:
        found = ", ".join(sorted(others)) or "none"
        raise VehicleMismatch(f"no offline bundle for {vin} at {where} (bundles for: {found})")
    return best[1]


__all__ = ["DIRECTOR", "BundleFetcher", "OfflinePrimary", "open_bundle"]
