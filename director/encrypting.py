"""Encrypted images and deltas at the Director (issue 17): which image each ECU of a bundle
gets, and sealed for whom.

- **Rules** (:func:`set_rule`, :func:`wants_encryption`): the OEM chooses encryption per
  image (a target path) or per hardware id; an assignment may say so itself. The choice
  is made when the assignment is recorded (``assignments.encrypt``) and needs the ECU's
  encryption key in the inventory. Encrypted and plain ECUs coexist in a vehicle, even
  for one image: the entry's wrapped keys name the ECUs that get the ciphertext.
- **Ciphertexts** (:class:`CiphertextStore`): each image (or delta) is encrypted **once**,
  under a fresh content key, in the chunked STREAM construction of
  :mod:`uptane.encryption`, and kept in ``DIR/ciphertexts`` (``HASH.enc``, named by the
  ciphertext's SHA-256; the content key beside it in ``keys/``, 0600). Every vehicle's
  entry for that image points at the one ciphertext and wraps its content key to each of
  its ECUs. The Director serves the ciphertexts itself (``GET
  /vehicles/VIN/images/HASH.enc``): they are its own artefact, made for its inventory and
  vouched for by its signed targets entry (length and hashes), so the Image repository
  needs no key of the Director's and its metadata does not grow with every ciphertext.
  The plaintext comes from the Image repository (:class:`ImageSource`), checked against
  its signed length and hashes before anything is encrypted.
- **Deltas** (:meth:`Sealer.delta_for`): when the ECU's last report names an image for
  which the Image repository lists a delta to the assigned image
  (:func:`uptane.delta.delta_path`, its ``delta`` section naming that base and that full
  image), the ECU's entry is the delta's; otherwise the full image's. A delta is
  encrypted like any image where the ECU uses encryption.
- :func:`bundle_targets`: a bundle's targets entries, made of the three above.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from director import inventory as inv
from director.common import HWID_RE, Invalid, epoch, iso
from director.imageview import ImageRepoView
from director.lifecycle import CANCELLED
from storage import LOCAL, FileSystem, dir_lock, read_capped, read_json, write_json
from storage.atomic import atomic_write
from uptane.delta import FORMAT, delta_path
from uptane.encryption import (
    CONTENT_KEY_BYTES,
    DEFAULT_CHUNK_SIZE,
    EncryptionPublicKey,
    Encryptor,
    encrypted_entry,
    wrap_key,
)
from uptane.errors import UptaneError
from uptane.identity import ImageIdentity, same_image
from uptane.limits import Limits
from uptane.metadata import TargetFile
from uptane.paths import check_target_path
from uptane.verify import ImageVerifier

#: ``DIR/ciphertexts``: ``HASH.enc`` (served), ``keys/HASH.key``, ``index/PLAIN.json``
CIPHERTEXTS = "ciphertexts"
#: a ciphertext's name as served: its SHA-256 and ``.enc`` (nothing else is served)
NAME = re.compile(r"^[0-9a-f]{64}\.enc$")
#: the chunk size of every ciphertext. 64 KiB: decryption at 0.80-0.88 of raw AES-GCM
#: (bench figure 10), about 130 KiB at the ECU; the link, not decryption, bounds the speed
CHUNK_SIZE = DEFAULT_CHUNK_SIZE
IMAGE, HARDWARE = "image", "hardware"
SCOPES = (IMAGE, HARDWARE)
_PIECE = 1024 * 1024


# --- the OEM's rules ---------------------------------------------------------------------


def check_rule(scope: str, value: str) -> None:
    """A rule names an image by its target path or a hardware id by its pattern."""
    if scope == IMAGE:
        check_target_path(value)
    elif scope == HARDWARE:
        if not HWID_RE.match(value):
            raise Invalid(f"bad hardware id {value[:64]!r}")
    else:
        raise Invalid(f"an encryption rule's scope is one of {SCOPES}, not {scope[:16]!r}")


def set_rule(
    conn: Connection, scope: str, value: str, encrypt: bool | None, now: datetime
) -> dict[str, Any]:
    """Encrypt (or not) every image assigned from now on for ``scope`` ``value``; None
    removes the rule. Assignments already made keep their choice."""
    check_rule(scope, value)
    r = inv.encryption_rules
    where = sa.and_(r.c.scope == scope, r.c.value == value)
    conn.execute(r.delete().where(where))
    if encrypt is not None:
        conn.execute(
            r.insert().values(scope=scope, value=value, encrypt=encrypt, updated_at=epoch(now))
        )
    return {"scope": scope, "value": value, "encrypt": encrypt}


def list_rules(conn: Connection) -> list[dict[str, Any]]:
    r = inv.encryption_rules
    rows = conn.execute(sa.select(r).order_by(r.c.scope, r.c.value)).all()
    return [
        {"scope": x.scope, "value": x.value, "encrypt": x.encrypt, "updated_at": iso(x.updated_at)}
        for x in rows
    ]


def wants_encryption(conn: Connection, path: str, hardware_id: str, explicit: bool | None) -> bool:
    """Whether ``path`` goes out encrypted to an ECU of ``hardware_id``: the assignment's
    own choice, else the image's rule, else the hardware id's rule, else not."""
    if explicit is not None:
        return explicit
    r = inv.encryption_rules
    for scope, value in ((IMAGE, path), (HARDWARE, hardware_id)):
        found = conn.execute(
            sa.select(r.c.encrypt).where(r.c.scope == scope, r.c.value == value)
        ).first()
        if found is not None:
            return bool(found.encrypt)
    return False


# --- the plaintext, from the Image repository -----------------------------------------------


class ImageSource:
    """Downloads an image from the Image repository (an HTTP service, or a repository
    directory) into a file, checked against its signed length and hashes."""

    def __init__(
        self,
        location: str,
        view: Callable[[], ImageRepoView],
        limits: Limits,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.location = location
        self.view = view
        self.limits = limits
        self.timeout = timeout

    def fetch(self, tf: TargetFile, dest: Path, fs: FileSystem = LOCAL) -> None:
        """Write ``tf``'s verified bytes to ``dest`` (raises the core's error otherwise)."""
        verifier = ImageVerifier(tf, self.limits)
        with fs.create(dest, 0o600) as f:
            for piece in self._pieces(tf):
                verifier.update(piece)  # nothing past the signed length is kept
                f.write(piece)
            f.sync()
        verifier.finish()

    def _pieces(self, tf: TargetFile) -> Any:
        if self.location.startswith(("http://", "https://")):
            yield from self._http(tf)
            return
        path = self._local(tf)
        with open(path, "rb") as f:
            while piece := f.read(_PIECE):
                yield piece

    def _http(self, tf: TargetFile) -> Any:
        dirname, sep, name = tf.path.rpartition("/")
        if self.view().consistent_snapshot:
            name = f"{tf.hashes['sha256'].lower()}.{name}"
        url = f"{self.location.rstrip('/')}/targets/{quote(dirname + sep + name, safe='/')}"
        with httpx.stream("GET", url, timeout=self.timeout) as r:
            if r.status_code != 200:
                raise Invalid(f"the Image repository answers {r.status_code} for {tf.path!r}")
            yield from r.iter_bytes(_PIECE)

    def _local(self, tf: TargetFile) -> Path:
        """An image in a repository directory: ``images/SHA256`` (this project's
        repositories) or ``targets/PATH`` (a static one)."""
        d = Path(self.location)
        root = d if (d / "metadata").is_dir() else d.parent
        digest = tf.hashes.get("sha256", "").lower()
        for p in (root / "images" / digest, root / "targets" / tf.path):
            if digest and p.is_file():
                return p
        raise Invalid(f"{tf.path!r} is not in the Image repository at {self.location}")


# --- ciphertexts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sealed:
    """One image's ciphertext: its served name, length and hashes, and the content key."""

    filename: str
    length: int
    hashes: dict[str, str]
    content_key: bytes


class CiphertextStore:
    """Each image encrypted once, kept in ``directory`` (see the module doc)."""

    def __init__(
        self,
        directory: Path,
        source: ImageSource,
        *,
        chunk_size: int = CHUNK_SIZE,
        fs: FileSystem = LOCAL,
    ) -> None:
        self.root = directory
        self.source = source
        self.chunk_size = chunk_size
        self.fs = fs

    def path(self, name: str) -> Path | None:
        """The file of a served ciphertext name, if the Director made it."""
        if not NAME.match(name):
            return None
        p = self.root / name
        return p if p.is_file() else None

    def ensure(self, tf: TargetFile) -> Sealed:
        """The ciphertext of ``tf``'s image, made now if it is not there yet (the image is
        downloaded from the Image repository and checked first)."""
        digest = tf.hashes.get("sha256")
        if digest is None:
            raise Invalid(f"{tf.path!r} lists no sha256: it cannot be encrypted here")
        digest = digest.lower()
        found = self._lookup(digest, tf.length)
        if found is not None:
            return found
        with dir_lock(self.root):  # one encryption per image, across processes
            return self._lookup(digest, tf.length) or self._encrypt(tf, digest)

    def _lookup(self, digest: str, length: int) -> Sealed | None:
        rec = read_json(self.root / "index" / f"{digest}.json")
        if not isinstance(rec, dict) or rec.get("plaintext_length") != length:
            return None
        name = str(rec.get("filename", ""))
        if self.path(name) is None:
            return None
        key = read_capped(self.root / "keys" / f"{name}.key", CONTENT_KEY_BYTES)
        return Sealed(name, int(rec["length"]), dict(rec["hashes"]), key)

    def _encrypt(self, tf: TargetFile, digest: str) -> Sealed:
        """Download, check, encrypt in pieces, then name the ciphertext by its hash; the
        index record is written last (it names only durable files)."""
        token = secrets.token_hex(4)
        plain, tmp = self.root / f".plain-{token}", self.root / f".enc-{token}"
        try:
            self.source.fetch(tf, plain, self.fs)
            enc = Encryptor(tf.length, chunk_size=self.chunk_size)
            hashers = {"sha256": hashlib.sha256(), "sha512": hashlib.sha512()}
            with self.fs.create(tmp, 0o600) as out, open(plain, "rb") as src:
                while piece := src.read(_PIECE):
                    _write_hashed(out, enc.update(piece), hashers)
                _write_hashed(out, enc.finish(), hashers)
                out.sync()
                out.chmod(0o644)  # served to anyone: it is encrypted
            hashes = {alg: h.hexdigest() for alg, h in hashers.items()}
            name = f"{hashes['sha256']}.enc"
            atomic_write(
                self.root / "keys" / f"{name}.key", enc.content_key, mode=0o600, fs=self.fs
            )
            self.fs.replace(tmp, self.root / name)
            self.fs.sync_dir(self.root)
            rec = {
                "filename": name,
                "length": enc.ciphertext_length,
                "hashes": hashes,
                "plaintext": tf.path,
                "plaintext_length": tf.length,
                "chunk_size": self.chunk_size,
            }
            write_json(self.root / "index" / f"{digest}.json", rec, mode=0o600, fs=self.fs)
            return Sealed(name, enc.ciphertext_length, hashes, enc.content_key)
        finally:
            for p in (plain, tmp):
                p.unlink(missing_ok=True)


def _write_hashed(out: Any, data: bytes, hashers: Mapping[str, Any]) -> None:
    out.write(data)
    for h in hashers.values():
        h.update(data)


# --- what a bundle's ECUs get --------------------------------------------------------------------


class Sealer:
    """Chooses a delta where one fits and seals entries for the ECUs that use encryption."""

    def __init__(self, store: CiphertextStore, view: Callable[[], ImageRepoView]) -> None:
        self.store = store
        self.view = view

    def delta_for(
        self, full: TargetFile, installed: ImageIdentity | None, hardware_id: str
    ) -> TargetFile | None:
        """The Image repository's delta from ``installed`` (the ECU's last report) to
        ``full``, for an ECU of ``hardware_id``; None when there is none (then the full
        image goes). Never fails a bundle: an Image repository that cannot be read here
        means the full image."""
        if installed is None or "sha256" not in installed.hashes or same_image(installed, full):
            return None
        try:
            tf = self.view().find(delta_path(full, installed), hardware_id)
        except (UptaneError, httpx.HTTPError, OSError, ValueError):
            return None
        d = tf.delta if tf is not None else None
        if tf is None or d is None or d.format != FORMAT:
            return None
        if not (same_image(d.base, installed) and same_image(d.target, full)):
            return None
        return _copy(tf)

    def seal(self, tf: TargetFile, recipients: Mapping[str, EncryptionPublicKey]) -> None:
        """Set ``tf.encrypted``: its one ciphertext and the content key wrapped to each
        ECU of ``recipients`` (ECU id -> encryption key), bound to that ECU and image."""
        sealed = self.store.ensure(tf)
        keys = {ecu: wrap_key(sealed.content_key, pub, ecu, tf) for ecu, pub in recipients.items()}
        tf.encrypted = encrypted_entry(sealed.filename, sealed.length, sealed.hashes, keys)


def _copy(tf: TargetFile) -> TargetFile:
    """The Image repository's entry as the Director's starts from (no ECU named yet)."""
    return TargetFile(
        tf.path,
        tf.length,
        dict(tf.hashes),
        hardware_ids=list(tf.hardware_ids),
        release_counter=tf.release_counter,
        shall_match=tf.shall_match,
        delta=tf.delta,
    )


def assigned_target(r: Any) -> TargetFile:
    """The targets entry of an assignment row, copied from the Image repository's entry:
    length, hashes, release counter, hardware ids and the SHALL-match section (§5.4.4.2
    step 10.2)."""
    custom = json.loads(r.image_custom or "{}")
    return TargetFile(
        r.target_path,
        r.length,
        json.loads(r.hashes),
        hardware_ids=list(custom.get("hardwareIds") or []),
        release_counter=r.release_counter,
        shall_match=custom.get("shallMatch"),
    )


def _installed(r: Any) -> ImageIdentity | None:
    if r.installed_path is None or r.installed_length is None:
        return None
    return ImageIdentity(
        r.installed_path, r.installed_length, json.loads(r.installed_hashes or "{}")
    )


def bundle_targets(conn: Connection, bid: int, sealer: Sealer | None) -> list[TargetFile]:
    """The targets entries of bundle ``bid`` (a withdrawn assignment no longer counts): one
    per image, naming every ECU of the bundle it is for (``custom.ecuIdentifiers``) and
    their hardware ids; the delta instead of the full image for an ECU whose reported
    image is its base; encrypted for the ECUs whose assignment says so."""
    a, e = inv.assignments, inv.ecus
    rows = conn.execute(
        sa.select(
            a,
            e.c.serial,
            e.c.installed_path,
            e.c.installed_length,
            e.c.installed_hashes,
            e.c.encryption_key,
        )
        .join(e, e.c.id == a.c.ecu_id)
        .where(a.c.bundle_id == bid, a.c.state != CANCELLED)
        .order_by(a.c.id)
    ).all()
    out: dict[str, TargetFile] = {}
    recipients: dict[str, dict[str, EncryptionPublicKey]] = {}
    for r in rows:
        full = assigned_target(r)
        delta = sealer.delta_for(full, _installed(r), r.hardware_id) if sealer else None
        tf = out.setdefault((delta or full).path, delta or full)
        tf.ecu_ids[r.serial] = r.hardware_id
        if r.hardware_id not in tf.hardware_ids:
            tf.hardware_ids.append(r.hardware_id)
        if r.encrypt:
            if r.encryption_key is None:  # registered when assigned; keys are only replaced
                raise Invalid(f"ECU {r.serial} has no encryption key registered")
            key = EncryptionPublicKey.from_dict(json.loads(r.encryption_key), Limits.primary())
            recipients.setdefault(tf.path, {})[r.serial] = key
    for path, keys in recipients.items():
        if sealer is None:
            raise Invalid("this Director cannot encrypt images (no ciphertext store)")
        sealer.seal(out[path], keys)
    return list(out.values())


__all__ = [
    "CIPHERTEXTS",
    "HARDWARE",
    "IMAGE",
    "NAME",
    "CiphertextStore",
    "ImageSource",
    "Sealed",
    "Sealer",
    "assigned_target",
    "bundle_targets",
    "list_rules",
    "set_rule",
    "wants_encryption",
]
