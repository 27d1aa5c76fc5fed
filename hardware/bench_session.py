"""A bench session: the bench laptop as the Primary of a bench vehicle (issue 18).

A bench vehicle is registered at the Director like any other: its Primary is the laptop,
whose key ``uptane-flash session`` makes, and its Secondaries are the ECUs on the bench.
After each flash, ``uptane-flash install --session DIR`` sends the Director what a Primary
sends: a vehicle version manifest signed with the bench key, carrying the ECU's own signed
version report (for a fresh nonce), the laptop's report, and an ``unreachable_ecus``
entry for every other ECU of the bench vehicle (§5.3.2.1: every registered ECU is
represented once). So the bench bundle is confirmed (or failed) by the ECU's own word,
and the next assignment goes out. When the Director cannot be reached, the manifest is
kept in ``DIR/outbox`` and ``uptane-flash upload --session DIR`` sends it later.

The session directory:

- ``session.toml``: the VIN, the laptop's ECU serial and hardware id, the Director's URL
  and the bench vehicle's other ECUs;
- ``bench.pem`` (0600): the laptop's key; ``bench.pub.json``: its public half, to register
  as the bench vehicle's Primary;
- ``outbox/``: manifests not delivered yet.

The session fetches the Director's metadata for the vehicle (every root version and the
current targets; with an Image repository URL, both repositories' files for a full
verification ECU). Nothing here is trusted by the ECU because the laptop sent it: the
ECU verifies every file itself.
"""

from __future__ import annotations

import json
import secrets
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

import tomli_w
import urllib3

from storage import atomic_write, read_capped
from uptane.codec import codec_for, for_filename
from uptane.errors import UptaneError
from uptane.keys import ED25519, MAX_KEY_FILE, PrivateKey
from uptane.limits import PRIMARY, Limits
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    UnreachableEcu,
    build_vehicle_manifest,
    decode_report,
)
from uptane.metadata import Snapshot, decode
from uptane.repository import metadata_filename

SESSION_FILE = "session.toml"
KEY_FILE = "bench.pem"
PUBLIC_FILE = "bench.pub.json"
OUTBOX = "outbox"
#: the image the laptop reports running: none
EMPTY = InstalledImage("", 0, {"sha256": sha256(b"").hexdigest()})
#: the most root versions fetched in one go (a root rotation chain)
MAX_ROOTS = 64


class SessionError(ValueError):
    """A session that cannot be used as it is: a missing or bad file, a bad setting."""


@dataclass
class Delivery:
    """What became of one manifest: uploaded (with the Director's answer), refused (with
    its reason), or kept in the outbox for later."""

    uploaded: bool
    answer: Any = None
    refused: str | None = None
    saved: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uploaded": self.uploaded}
        if self.answer is not None:
            out["answer"] = self.answer
        if self.refused is not None:
            out["refused"] = self.refused
        if self.saved is not None:
            out["saved"] = str(self.saved)
        return out


@dataclass
class BenchSession:
    """One bench vehicle as the laptop drives it (see the module doc)."""

    directory: Path
    vin: str
    primary_serial: str = "bench"
    hardware_id: str = "uptane-bench"
    director_url: str | None = None
    image_url: str | None = None
    #: every other ECU registered in the bench vehicle (each flash names the ones not
    #: flashed unreachable)
    ecus: tuple[str, ...] = ()
    #: seconds per HTTP request
    timeout: float = 10.0

    # --- files --------------------------------------------------------------------------

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def outbox(self) -> Path:
        return self.directory / OUTBOX

    @classmethod
    def create(
        cls, directory: Path, vin: str, *, key_type: str = ED25519, force: bool = False, **kw: Any
    ) -> BenchSession:
        """Write a new session: its settings, a new bench key (0600) and its public half."""
        s = cls(Path(directory), vin, **kw)
        if (s.directory / SESSION_FILE).exists() and not force:
            raise SessionError(f"{s.directory / SESSION_FILE} exists (use --force to replace)")
        s.directory.mkdir(parents=True, exist_ok=True)
        key = PrivateKey.generate(key_type)
        atomic_write(s.key_path, key.to_pem(), mode=0o600)
        public = json.dumps(key.key.to_dict(), indent=2, sort_keys=True) + "\n"
        atomic_write(s.directory / PUBLIC_FILE, public.encode(), mode=0o644)
        s.save()
        return s

    def save(self) -> None:
        doc: dict[str, Any] = {
            "vin": self.vin,
            "primary_serial": self.primary_serial,
            "hardware_id": self.hardware_id,
            "ecus": list(self.ecus),
            "timeout": self.timeout,
        }
        for name in ("director_url", "image_url"):
            if getattr(self, name):
                doc[name] = getattr(self, name)
        text = "# uptane-flash bench session (docs/workshop.md)\n" + tomli_w.dumps(doc)
        atomic_write(self.directory / SESSION_FILE, text.encode(), mode=0o644)

    @classmethod
    def load(cls, directory: str | Path) -> BenchSession:
        d = Path(directory)
        try:
            doc = tomllib.loads(read_capped(d / SESSION_FILE, 64 * 1024).decode("utf-8"))
            s = cls(
                d,
                str(doc["vin"]),
                str(doc.get("primary_serial", "bench")),
                str(doc.get("hardware_id", "uptane-bench")),
                doc.get("director_url"),
                doc.get("image_url"),
                tuple(str(e) for e in doc.get("ecus", [])),
                float(doc.get("timeout", 10.0)),
            )
        except (OSError, UptaneError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SessionError(f"bench session {d}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise SessionError(f"bench session {d / SESSION_FILE}: bad setting {e}") from None
        return s

    def key(self) -> PrivateKey:
        try:
            return PrivateKey.from_pem(read_capped(self.key_path, MAX_KEY_FILE))
        except (OSError, UptaneError) as e:
            raise SessionError(f"bench key {self.key_path}: {e}") from None

    # --- the Director's metadata --------------------------------------------------------

    def _http(self) -> urllib3.PoolManager:
        return urllib3.PoolManager(timeout=urllib3.Timeout(self.timeout), retries=False)

    def _get(self, http: urllib3.PoolManager, url: str, max_bytes: int) -> bytes | None:
        """GET ``url`` (None on 404); at most ``max_bytes``."""
        try:
            r = http.request("GET", url, preload_content=False, redirect=False)
        except urllib3.exceptions.HTTPError as e:
            raise SessionError(f"cannot reach {url}: {e}") from None
        try:
            if r.status == 404:
                return None
            if r.status != 200:
                raise SessionError(f"{url}: HTTP {r.status}")
            data = r.read(max_bytes + 1)
        finally:
            r.drain_conn()  # what is left of the body must not be read as the next answer
            r.release_conn()
        if len(data) > max_bytes:
            raise SessionError(f"{url}: more than {max_bytes} bytes")
        return bytes(data)

    def repository_files(
        self, base: str, encoding: str, *, full: bool, limits: Limits = PRIMARY
    ) -> list[tuple[str, bytes]]:
        """A repository's files as its server names them, in the order an ECU applies
        them: every root version from 1, then (``full``) timestamp, snapshot and every role
        the snapshot lists, else the targets alone."""
        http = self._http()
        base = base.rstrip("/") + "/"
        cap = limits.bytes_for_role("targets")
        out: list[tuple[str, bytes]] = []
        for version in range(1, MAX_ROOTS + 1):
            name = metadata_filename("root", version, encoding)
            data = self._get(http, base + name, cap)
            if data is None:
                break
            out.append((name, data))
        if not out:
            raise SessionError(f"{base}: no root metadata (is the VIN registered?)")
        roles: list[tuple[str, int | None]] = [("targets", None)]
        if full:
            ts_name = metadata_filename("timestamp", None, encoding)
            out.append((ts_name, self._must(http, base, ts_name, cap)))
            snapshot = self._must(http, base, metadata_filename("snapshot", None, encoding), cap)
            out.append((metadata_filename("snapshot", None, encoding), snapshot))
            roles = _snapshot_roles(snapshot, encoding, limits)
        for role, role_version in roles:
            name = metadata_filename(role, role_version, encoding)
            out.append((name, self._must(http, base, name, cap)))
        return out

    def _must(self, http: urllib3.PoolManager, base: str, name: str, cap: int) -> bytes:
        data = self._get(http, base + name, cap)
        if data is None:
            raise SessionError(f"{base}{name}: not found")
        return data

    def director_base(self) -> str:
        if not self.director_url:
            raise SessionError("the session names no Director (uptane-flash session --director)")
        return f"{self.director_url.rstrip('/')}/vehicles/{self.vin}/metadata/"

    # --- the manifest -------------------------------------------------------------------

    def manifest(self, report: bytes, encoding: str, limits: Limits = PRIMARY) -> bytes:
        """The bench vehicle's version manifest around the ECU's signed ``report`` (in
        ``encoding``): the laptop's own report and an unreachable entry for each other ECU
        of the bench vehicle, signed with the bench key."""
        ecu: SignedManifest[EcuVersionReport] = decode_report(report, limits, encoding)
        now = datetime.now(UTC).replace(microsecond=0)
        own = SignedManifest(
            EcuVersionReport(self.primary_serial, EMPTY, now, nonce=secrets.token_bytes(16)),
            encoding=encoding,
        )
        key = self.key()
        own.sign(key)
        flashed = ecu.signed.ecu_id
        absent = [
            UnreachableEcu(e, "not connected to the bench laptop for this flash", None)
            for e in self.ecus
            if e not in (flashed, self.primary_serial)
        ]
        vvm = build_vehicle_manifest(
            self.vin, self.primary_serial, [ecu, own], key, encoding=encoding, unreachable=absent
        )
        return vvm.to_bytes(encoding)

    def deliver(self, body: bytes, encoding: str, *, label: str = "manifest") -> Delivery:
        """Upload ``body`` to the Director; kept in the outbox when it cannot be reached,
        and when it refused it (an ECU with time keys reports its last signed time, which
        the Director's live check may find too old: the OEM can still take it as a
        carried manifest, ``uptane-director workshop upload``)."""
        try:
            d = self._post(body, encoding)
        except SessionError:
            d = Delivery(False)
        if d.uploaded:
            return d
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        d.saved = self.outbox / f"{stamp}-{label}{codec_for(encoding).suffix}"
        atomic_write(d.saved, body, mode=0o644)
        return d

    def _post(self, body: bytes, encoding: str) -> Delivery:
        url = self.director_base().removesuffix("metadata/") + "manifest"
        headers = {"Content-Type": codec_for(encoding).media_type}
        try:
            r = self._http().request("POST", url, body=body, headers=headers, redirect=False)
        except urllib3.exceptions.HTTPError as e:
            raise SessionError(f"cannot reach {url}: {e}") from None
        text = r.data[:4096].decode("utf-8", "replace")
        try:
            answer: Any = json.loads(text)
        except ValueError:
            answer = text
        if 200 <= r.status < 300:
            return Delivery(True, answer=answer)
        if r.status >= 500:
            raise SessionError(f"{url}: HTTP {r.status}")
        reason = answer.get("detail", text) if isinstance(answer, dict) else text
        return Delivery(False, refused=f"HTTP {r.status}: {reason}")

    def upload_outbox(self) -> list[dict[str, Any]]:
        """Send every manifest of the outbox, oldest first; each one the Director took (or
        refused for good) leaves it."""
        out = []
        for path in sorted(self.outbox.glob("*")) if self.outbox.is_dir() else []:
            encoding = _encoding_of(path)
            d = self._post(read_capped(path, PRIMARY.link_message_bytes * 64), encoding)
            if d.uploaded:
                path.unlink()
            out.append({"file": str(path), **d.to_dict()})
        return out


def _encoding_of(path: Path) -> str:
    return for_filename(path.name).name


def _snapshot_roles(snapshot: bytes, encoding: str, limits: Limits) -> list[tuple[str, int | None]]:
    """The targets roles a snapshot lists (the top-level targets first), each with the
    version it names: read, not trusted (the ECU verifies the snapshot itself)."""
    md = decode(snapshot, limits, encoding=encoding, role_type="snapshot").signed
    assert isinstance(md, Snapshot)
    roles = sorted(
        ((name.removesuffix(".json"), meta.version) for name, meta in md.meta.items()),
        key=lambda rv: (rv[0] != "targets", rv[0]),
    )
    return [(role, version) for role, version in roles]


__all__ = ["BenchSession", "Delivery", "SessionError"]
