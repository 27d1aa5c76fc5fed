"""The Image repository (§5.3.1): offline-signed top-level targets, supplier delegations,
online snapshot and timestamp, images stored by hash.

Directory layout of a repository ``DIR`` (everything a server reads):

- ``DIR/metadata/``: the signed metadata (see :mod:`director.repostate`);
- ``DIR/images/SHA256``: image bytes, by content;
- ``DIR/online-keys/``: the snapshot and timestamp keys;
- ``DIR/staged.json``: target entries added but not yet signed;
- ``DIR/tokens.json``: SHA-256 of each upload token and the role it may write.

The offline key directory (root, targets, suppliers' keys) is separate and given to the
offline commands only (``--offline-keys``; default ``DIR.offline-keys`` next to ``DIR``).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from director import repostate
from director.keysource import FileKeySource, generate
from storage import atomic_copy, atomic_write, dir_lock, read_json, write_json
from uptane.errors import (
    EndlessDataAttack,
    MalformedInput,
    TargetNotFound,
    UptaneError,
)
from uptane.keys import ED25519, Signer
from uptane.limits import Limits
from uptane.metadata import JSON, DelegatedRole, Metadata, TargetFile, Targets, decode
from uptane.paths import check_target_path
from uptane.repository import RepositoryBuilder
from uptane.signatures import check_threshold
from uptane.trust import is_delegated_path

NAME = "image"
ADMIN = "admin"
#: images and metadata, which any client may download
PUBLIC_MODE = 0o644
#: the staged entries, read by the offline commands and the server (not secret)
STATE_MODE = 0o644
#: upload tokens (their hashes)
SECRET_MODE = 0o600


class Forbidden(Exception):
    """An upload the uploader's role is not authorised for (HTTP 403)."""


class Conflict(Exception):
    """An upload that contradicts the repository's state (HTTP 409)."""


def default_offline_dir(repo_dir: Path) -> Path:
    return repo_dir.parent / f"{repo_dir.name}.offline-keys"


def path_matches(pattern: str, path: str) -> bool:
    """TUF delegation path pattern, matched by the core's one implementation."""
    return is_delegated_path(DelegatedRole("", [], 1, paths=[pattern]), path)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class ImageRepoPaths:
    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def online_keys(self) -> Path:
        return self.root / "online-keys"

    @property
    def staged(self) -> Path:
        return self.root / "staged.json"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.json"


class ImageRepository:
    """One Image repository directory, loaded as a builder with the keys the caller holds."""

    def __init__(
        self,
        repo_dir: Path,
        now: datetime,
        *,
        offline_dir: Path | None = None,
        limits: Limits | None = None,
        expiry: dict[str, timedelta] | None = None,
    ) -> None:
        self.paths = ImageRepoPaths(Path(repo_dir))
        self.limits = limits or Limits.primary()
        self.expiry = expiry
        self.online = FileKeySource(self.paths.online_keys)
        self.offline = FileKeySource(offline_dir) if offline_dir is not None else None
        self.builder = repostate.load(
            NAME, self.paths.metadata, self._signers(), now, self.limits, expiry=expiry
        )
        #: role -> encoding -> (model, bytes) of uploads waiting for their other encoding
        self.pending: dict[str, dict[str, tuple[Targets, bytes]]] = {}

    def _signers(self) -> dict[str, list[Signer]]:
        s: dict[str, list[Signer]] = {
            "snapshot": self.online.signers("snapshot"),
            "timestamp": self.online.signers("timestamp"),
        }
        if self.offline is not None:
            s["root"] = self.offline.signers("root")
            s["targets"] = self.offline.signers("targets")
        return s

    # --- creation ---------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        repo_dir: Path,
        offline_dir: Path,
        now: datetime,
        *,
        scheme: str = ED25519,
        expiry: dict[str, timedelta] | None = None,
    ) -> str:
        """Create keys and version 1 of every role; returns the admin upload token."""
        repo_dir = Path(repo_dir)
        paths = ImageRepoPaths(repo_dir)
        if repostate.exists(paths.metadata):
            raise FileExistsError(f"{repo_dir} already holds a repository")
        if offline_dir.resolve().is_relative_to(repo_dir.resolve()):
            raise ValueError("the offline key directory must be outside the repository directory")
        offline = FileKeySource(offline_dir)
        online = FileKeySource(paths.online_keys)
        signers: dict[str, list[Signer]] = {}
        for role, src in (
            ("root", offline),
            ("targets", offline),
            ("snapshot", online),
            ("timestamp", online),
        ):
            if not src.signers(role):
                src.add(role, generate(scheme))
            signers[role] = src.signers(role)
        builder = RepositoryBuilder(
            NAME, signers, now, expiry=expiry, encodings=repostate.available_encodings()
        )
        paths.images.mkdir(parents=True, exist_ok=True)
        repostate.save(builder, paths.metadata)
        write_json(paths.staged, [], mode=STATE_MODE)
        token = secrets.token_urlsafe(32)
        write_json(paths.tokens, {hash_token(token): ADMIN}, mode=SECRET_MODE)
        return token

    # --- tokens -----------------------------------------------------------------------------

    def add_token(self, role: str) -> str:
        token = secrets.token_urlsafe(32)
        with dir_lock(self.paths.root):
            tokens = read_json(self.paths.tokens, {})
            tokens[hash_token(token)] = role
            write_json(self.paths.tokens, tokens, mode=SECRET_MODE)
        return token

    def role_for_token(self, token: str) -> str | None:
        return read_json(self.paths.tokens, {}).get(hash_token(token))

    # --- images -----------------------------------------------------------------------------

    def store_image(self, data: bytes) -> str:
        """Keep image bytes by their SHA-256; returns the hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.paths.images / digest
        if not path.exists():
            atomic_write(path, data, mode=PUBLIC_MODE)
        return digest

    def image_path(self, target: TargetFile) -> Path | None:
        digest = target.hashes.get("sha256")
        if digest is None:
            return None
        p = self.paths.images / digest.lower()
        return p if p.exists() else None

    def stage_target(
        self,
        path: str,
        data: bytes,
        hardware_ids: list[str],
        release_counter: int | None,
        *,
        custom: dict[str, Any] | None = None,
        shall_match: dict[str, Any] | None = None,
    ) -> TargetFile:
        """Store an image and stage its entry for the next offline ``sign``."""
        check_target_path(path)
        if not hardware_ids:
            raise MalformedInput("a target needs at least one hardware id")
        self.limits.check_bytes("image", len(data), self.limits.image_bytes)
        tf = TargetFile.from_data(
            path,
            data,
            ("sha256", "sha512"),
            hardware_ids=list(hardware_ids),
            release_counter=release_counter,
        )
        if custom:
            tf.custom_extra = dict(custom)
        tf.shall_match = shall_match
        self.store_image(data)
        with dir_lock(self.paths.root):
            staged = read_json(self.paths.staged, [])
            staged = [s for s in staged if s["path"] != path]
            staged.append({"path": path, "entry": tf.to_dict()})
            write_json(self.paths.staged, staged, mode=STATE_MODE)
        return tf

    def staged(self) -> list[TargetFile]:
        return [
            TargetFile.from_dict(s["path"], s["entry"], self.limits)
            for s in read_json(self.paths.staged, [])
        ]

    # --- offline operations ------------------------------------------------------------------

    @contextlib.contextmanager
    def _mutation(self, now: datetime) -> Iterator[RepositoryBuilder]:
        """Hold the directory lock and work on the repository as it is on disk now: another
        process (the server, an offline command) may have changed it since this one loaded
        it, and versions must never be issued twice."""
        with dir_lock(self.paths.root):
            self.builder = repostate.load(
                NAME, self.paths.metadata, self._signers(), now, self.limits, expiry=self.expiry
            )
            yield self.builder

    def _need_offline(self, role: str) -> None:
        if self.offline is None or not self.offline.signers(role):
            raise PermissionError(f"the offline {role} key is needed (--offline-keys)")

    def sign(self, now: datetime) -> int:
        """Sign staged targets with the offline targets key; returns the new targets version."""
        self._need_offline("targets")
        with self._mutation(now):
            staged = self.staged()
            for tf in staged:
                self.builder.add_target(tf)
            self.builder.mark("targets")
            self.builder.publish(now)
            repostate.save(self.builder, self.paths.metadata)
            write_json(self.paths.staged, [], mode=STATE_MODE)
        return self.builder.targets.version

    def delegate(
        self,
        role: str,
        paths: list[str],
        hardware_ids: list[str],
        now: datetime,
        *,
        terminating: bool = True,
        scheme: str = ED25519,
    ) -> tuple[Path, str]:
        """Delegate ``paths`` (and ``hardware_ids``) to a new supplier role with its own key.
        Returns the supplier's key file (in the offline directory) and its upload token."""
        self._need_offline("targets")
        assert self.offline is not None
        repostate.check_role_name(role)
        if not paths:
            raise MalformedInput("a delegation needs at least one path pattern")
        for p in paths:
            check_target_path(p.replace("*", "x").replace("?", "x"))
        key = generate(scheme)
        key_path = self.offline.directory / "suppliers" / f"{role}.pem"
        from director.keysource import save_private_key

        with self._mutation(now):
            if role in self.builder.delegated:
                raise Conflict(f"role {role!r} already exists")
            save_private_key(key_path, key)
            deleg = DelegatedRole(
                role,
                [],
                1,
                terminating,
                paths=list(paths),
                hardware_ids=list(hardware_ids) or None,
            )
            self.builder.delegate("targets", deleg, [key])
            self.builder.publish(now)
            repostate.save(self.builder, self.paths.metadata)
        return key_path, self.add_token(role)

    def rotate_root(self, now: datetime, *, scheme: str = ED25519) -> int:
        """Replace the root key: the new root is signed by the old and the new keys
        (§5.4.4.3: a client accepts N+1 only with a threshold of both). Returns the new
        root version."""
        self._need_offline("root")
        assert self.offline is not None
        old = self.offline.signers("root")
        new = generate(scheme)
        with self._mutation(now):
            self.builder.rotate_keys("root", [new], revoke=[s.key.keyid for s in old])
            self.builder.publish(now)
            repostate.save(self.builder, self.paths.metadata)
            self.offline.replace("root", new)
        return len(self.builder.root_history)

    # --- online operations -------------------------------------------------------------------

    def refresh(self, now: datetime, *, margin: timedelta | None = None) -> bool:
        """Re-sign snapshot and timestamp when they expire within ``margin`` (default: half
        their lifetime). Returns True if anything was re-signed."""
        changed = False
        with self._mutation(now) as b:
            snap_life = b.expiry["snapshot"]
            if b.snapshot.expires - now <= (margin or snap_life / 2):
                b.mark("snapshot")
                changed = True
            ts_life = b.expiry["timestamp"]
            if changed or b.timestamp.expires - now <= (margin or ts_life / 2):
                b.publish(now)
                repostate.save(b, self.paths.metadata)
                changed = True
        return changed

    def reload_if_changed(self, now: datetime) -> bool:
        """Reload from disk if an offline command changed the repository."""
        cur = read_json(self.paths.metadata / repostate.CURRENT)
        b = self.builder
        mine = {"targets": b.targets.version, "snapshot": b.snapshot.version}
        if (
            cur["root"] != len(b.root_history)
            or cur["delegated"] != b.delegated
            or any(cur["versions"].get(r) != v for r, v in mine.items())
            or cur["versions"].get("timestamp") != b.timestamp.version
        ):
            self.builder = repostate.load(
                NAME, self.paths.metadata, self._signers(), now, self.limits, expiry=self.expiry
            )
            return True
        return False

    def publish(self, out: Path) -> int:
        """Write a static TUF repository to ``out``: ``metadata/`` and ``targets/HASH.name``.
        Images go first, then versioned metadata, the timestamp last, so a client reading
        ``out`` meanwhile never finds metadata naming a file that is not there yet.
        Returns the number of image files written."""
        out = Path(out)
        b = self.builder
        count = 0
        for role in ["targets", *b.delegated]:
            model = b.role(role)
            assert isinstance(model, Targets)
            for tpath, tf in model.targets.items():
                check_target_path(tpath)
                src = self.image_path(tf)
                if src is None:
                    raise TargetNotFound(f"image bytes of {tpath!r} are missing")
                dirname, _, base = tpath.rpartition("/")
                for digest in tf.hashes.values():
                    dest = out / "targets" / dirname / f"{digest}.{base}"
                    if dest.exists() and dest.stat().st_size == tf.length:
                        continue  # content-addressed: already there
                    atomic_copy(src, dest, mode=PUBLIC_MODE)
                    count += 1
        last: list[tuple[Path, bytes]] = []
        for enc in b.encodings:
            for fname, data in b.versioned_files(enc).items():
                if fname.startswith("timestamp."):
                    last.append((out / "metadata" / fname, data))
                else:
                    atomic_write(out / "metadata" / fname, data, mode=PUBLIC_MODE)
        for path, data in last:
            atomic_write(path, data, mode=PUBLIC_MODE)
        return count

    # --- uploads (§5.3.1: the uploader's delegation chain decides) ---------------------------

    def delegation(self, role: str) -> DelegatedRole:
        d = repostate.delegations_of(self.builder, role)
        if d is None:
            raise Forbidden(f"role {role!r} is not delegated")
        return d

    def check_image_upload(self, uploader: str, path: str) -> str:
        """Which role an image upload at ``path`` belongs to; Forbidden if the uploader's
        delegation does not cover the path."""
        check_target_path(path)
        if uploader == ADMIN:
            return "targets"
        d = self.delegation(uploader)
        if not any(path_matches(p, path) for p in d.paths or []):
            raise Forbidden(f"role {uploader!r} is not delegated path {path[:64]!r}")
        return uploader

    def upload_image(self, uploader: str, path: str, data: bytes) -> TargetFile:
        """Accept image bytes from ``uploader``; they are served only once signed metadata
        lists them."""
        self.check_image_upload(uploader, path)
        self.limits.check_bytes("image", len(data), self.limits.image_bytes)
        self.store_image(data)
        return TargetFile.from_data(path, data, ("sha256", "sha512"))

    def upload_metadata(
        self, uploader: str, role: str, data: bytes, encoding: str, now: datetime
    ) -> tuple[int, bool]:
        """Install ``role``'s targets metadata signed elsewhere. The uploader must own the
        role; a threshold of that role's keys must sign it; every target must lie inside the
        role's delegated paths and hardware ids; its images must be uploaded; the version
        must grow. Returns the version and whether it is now published (it waits until it
        arrived in every encoding the repository publishes); raises and changes nothing
        otherwise."""
        with self._mutation(now):
            return self._upload_metadata(uploader, role, data, encoding, now)

    def _upload_metadata(
        self, uploader: str, role: str, data: bytes, encoding: str, now: datetime
    ) -> tuple[int, bool]:
        if role == "targets":
            if uploader != ADMIN:
                raise Forbidden("only the OEM admin may upload top-level targets")
        elif uploader != role:
            raise Forbidden(f"role {uploader!r} may not upload metadata of role {role!r}")
        if encoding not in self.builder.encodings:
            raise MalformedInput(f"this repository does not publish {encoding}")
        md: Metadata[Any] = decode(data, self.limits, encoding=encoding, role_type="targets")
        new = md.signed
        assert isinstance(new, Targets)
        if role == "targets":
            self._check_top_targets(md, new)
        else:
            self._check_delegated(role, md, new)
        for tpath, tf in new.targets.items():
            check_target_path(tpath)
            src = self.image_path(tf)
            if src is None or src.stat().st_size != tf.length:
                raise Conflict(f"image {tpath[:64]!r} has not been uploaded")
        current = self.builder.role(role)
        if new.version <= current.version:
            # not an attack on the repository: another upload (or an offline change) came
            # first, and the uploader signed from what it read before that
            raise Conflict(
                f"{role} version {new.version} is not above the current {current.version}:"
                " another version was published first. Read the role again and sign the"
                " next version"
            )
        if new.is_expired(now):
            raise Conflict("the uploaded metadata is already expired")
        return new.version, self._arrived(role, new, data, encoding, now)

    def _check_top_targets(self, md: Metadata[Any], new: Targets) -> None:
        """Top-level targets: signed by a threshold of the root's targets keys, and keeping
        the delegations as they are (``delegate`` changes those)."""
        assert md.signed_bytes is not None
        keys, entry = self.builder.root.role_keys("targets")
        check_threshold(
            md.signed_bytes, md.signatures, keys, entry.keyids, entry.threshold, self.limits
        )
        cur = self.builder.targets
        old_names = [d.name for d in (cur.delegations.roles or [])] if cur.delegations else []
        new_names = [d.name for d in (new.delegations.roles or [])] if new.delegations else []
        if old_names != new_names:
            raise Conflict("top-level targets must keep the delegations; use `delegate`")

    def _check_delegated(self, role: str, md: Metadata[Any], new: Targets) -> None:
        """A supplier's targets: signed by a threshold of its delegated keys, delegating
        nothing, every entry inside its delegated paths and hardware ids."""
        assert md.signed_bytes is not None
        b = self.builder
        d = self.delegation(role)
        parent = b.role(b.parents[role])
        assert isinstance(parent, Targets) and parent.delegations is not None
        try:
            check_threshold(
                md.signed_bytes,
                md.signatures,
                parent.delegations.keys,
                d.keyids,
                d.threshold,
                self.limits,
                repository=NAME,
                role=role,
            )
        except UptaneError as e:
            raise Forbidden(str(e)) from None
        if new.delegations is not None:
            raise Forbidden("a supplier role may not delegate further")
        for tpath, tf in new.targets.items():
            if not any(path_matches(p, tpath) for p in d.paths or []):
                raise Forbidden(f"role {role!r} is not delegated path {tpath[:64]!r}")
            if d.hardware_ids is not None and not set(tf.hardware_ids) <= set(d.hardware_ids):
                raise Forbidden(f"role {role!r} may not sign for hardware {tf.hardware_ids}")

    def _arrived(self, role: str, new: Targets, data: bytes, encoding: str, now: datetime) -> bool:
        """Keep a checked upload until ``role`` has arrived in every encoding the
        repository publishes, then install it; True once installed. Every encoding carries
        its own signature over its own bytes; the signed content must be the same."""
        pending = self.pending.setdefault(role, {})
        pending = {e: v for e, v in pending.items() if v[0].version == new.version}
        pending[encoding] = (new, data)
        self.pending[role] = pending
        if set(pending) != set(self.builder.encodings):
            return False
        first = pending[JSON][0].to_dict()
        if any(m.to_dict() != first for m, _ in pending.values()):
            del self.pending[role]
            raise Conflict(f"the {role} uploads differ between encodings")
        self._install_presigned(role, new, {e: v[1] for e, v in pending.items()}, now)
        del self.pending[role]
        return True

    def _install_presigned(
        self, role: str, model: Targets, files: dict[str, bytes], now: datetime
    ) -> None:
        b = self.builder
        b.install_signed(role, model, files)
        b.publish(now)
        repostate.save(b, self.paths.metadata)


def check_upload_size(size: int, cap: int) -> None:
    if size > cap:
        raise EndlessDataAttack(f"upload of {size} bytes exceeds the {cap}-byte cap")


__all__ = ["ADMIN", "JSON", "Conflict", "Forbidden", "ImageRepository", "path_matches"]
