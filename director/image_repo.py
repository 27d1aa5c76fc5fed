"""The Image repository (§5.3.1): offline-signed top-level targets, supplier delegations,
online snapshot and timestamp, images stored by hash.

Directory layout of a repository ``DIR`` (everything a server reads):

- ``DIR/metadata/``: the signed metadata (see :mod:`director.repostate`);
- ``DIR/images/SHA256``: image bytes, by content;
- ``DIR/repo.json``: where the online keys are, and each role's lifetime
  (:mod:`director.image_config`);
- ``DIR/online-keys/``: the snapshot, timestamp and hash-bin keys, when they are files;
- ``DIR/staged.json``: target entries added but not yet signed;
- ``DIR/tokens.json``: SHA-256 of each upload token and the role it may write;
- ``DIR/ceremony/``: pending metadata waiting for signatures (:mod:`director.ceremony`).

The offline key directory (root and targets keys held here) is separate and given to the
offline commands only (``--offline-keys``; default ``DIR.offline-keys`` next to ``DIR``).
Suppliers' keys are never here: a delegation takes their public keys
(:mod:`director.image_delegations`). Key changes and ceremonies: :mod:`director.image_keys`.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from director import image_delegations as delegations
from director import image_keys, repostate
from director import image_uploads as uploads
from director.image_config import ImageRepoConfig, check_expiry, check_hashes
from director.image_keys import Outcome
from director.image_uploads import ADMIN, NAME, Conflict, Forbidden, path_matches
from keystore import FileKeySource, KeyStore, Secret, authorized
from storage import atomic_copy, atomic_write, dir_lock, read_json, write_json
from uptane.errors import (
    EndlessDataAttack,
    MalformedInput,
    TargetNotFound,
)
from uptane.keys import ED25519, Key, Signer
from uptane.limits import Limits
from uptane.metadata import JSON, TargetFile, Targets
from uptane.paths import check_target_path
from uptane.repository import PublishRefused, RepositoryBuilder

#: images and metadata, which any client may download
PUBLIC_MODE = 0o644
#: the staged entries, read by the offline commands and the server (not secret)
STATE_MODE = 0o644
#: upload tokens (their hashes)
SECRET_MODE = 0o600


def default_offline_dir(repo_dir: Path) -> Path:
    return repo_dir.parent / f"{repo_dir.name}.offline-keys"


def _secret(offline_dir: Path, env: str | None) -> Secret | None:
    """The passphrase of encrypted offline key files, from the variable ``env``."""
    return Secret(f"passphrase of the keys in {offline_dir}", env) if env else None


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
        passphrase_env: str | None = None,
    ) -> None:
        self.paths = ImageRepoPaths(Path(repo_dir))
        self.limits = limits or Limits.primary()
        self.config = ImageRepoConfig.load(self.paths.root)
        self._expiry = expiry
        self.expiry = expiry if expiry is not None else (self.config.expiry or None)
        self.online: KeyStore = self.config.online(self.paths.root)
        self.offline = (
            FileKeySource(offline_dir, _secret(offline_dir, passphrase_env))
            if offline_dir is not None
            else None
        )
        self.builder = self._load(now)
        #: role -> encoding -> (model, bytes) of uploads waiting for their other encoding
        self.pending: dict[str, dict[str, tuple[Targets, bytes]]] = {}

    def _signers(self) -> dict[str, list[Signer]]:
        s: dict[str, list[Signer]] = {r: self.online.signers(r) for r in image_keys.ONLINE_ROLES}
        if self.offline is not None:
            s["root"] = self.offline.signers("root")
            s["targets"] = self.offline.signers("targets")
        return s

    def _load(self, now: datetime) -> RepositoryBuilder:
        if self._expiry is None:  # lifetimes set meanwhile (`lifetimes`) count from now on
            self.expiry = ImageRepoConfig.load(self.paths.root).expiry or None
        b = repostate.load(
            NAME, self.paths.metadata, self._signers(), now, self.limits, expiry=self.expiry
        )
        self.attach_signers(b)
        return b

    def attach_signers(self, b: RepositoryBuilder) -> None:
        """Give each role the keys held here that its current root (or, for hash bins,
        the targets' delegation) lists: a key made for a rotation signs only once that is
        published."""
        root = b.root
        for role in image_keys.ONLINE_ROLES:
            b.set_signers(role, authorized(self.online, role, root.roles[role].keyids))
        if self.offline is not None:
            for role in ("root", "targets"):
                b.set_signers(role, authorized(self.offline, role, root.roles[role].keyids))
        sr = delegations.bins_of(b)
        if sr is not None:
            held = authorized(self.online, delegations.BINS_KEY, sr.keyids)
            for name in b.delegated:
                if sr.is_bin_name(name) and b.parents.get(name) == "targets":
                    b.set_signers(name, held)

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
        key_source: dict[str, Any] | None = None,
        expiry_days: dict[str, float] | None = None,
        passphrase_env: str | None = None,
        bins: int | None = None,
        hashes: tuple[str, ...] | None = None,
    ) -> str:
        """Create keys and version 1 of every role; returns the admin upload token. The
        online keys are made in ``key_source`` (default: files in ``DIR/online-keys``),
        the offline ones in ``offline_dir`` (encrypted with the passphrase in the
        variable ``passphrase_env``, when named). With ``bins``, the top-level targets
        delegates every path to ``2**bins`` hash bins from the start (targets version 2)."""
        repo_dir = Path(repo_dir)
        paths = ImageRepoPaths(repo_dir)
        if repostate.exists(paths.metadata):
            raise FileExistsError(f"{repo_dir} already holds a repository")
        if offline_dir.resolve().is_relative_to(repo_dir.resolve()):
            raise ValueError("the offline key directory must be outside the repository directory")
        config = ImageRepoConfig(key_source, check_expiry(expiry_days or {}))
        if hashes is not None:
            config.hashes = check_hashes(list(hashes))
        repo_dir.mkdir(parents=True, exist_ok=True)
        config.save(repo_dir)
        offline = FileKeySource(offline_dir, _secret(offline_dir, passphrase_env))
        online = config.online(repo_dir)
        signers: dict[str, list[Signer]] = {}
        for role, src in (
            ("root", offline),
            ("targets", offline),
            ("snapshot", online),
            ("timestamp", online),
        ):
            if not src.signers(role):
                src.generate(role, scheme)
            signers[role] = src.signers(role)
        builder = RepositoryBuilder(
            NAME,
            signers,
            now,
            expiry={**config.expiry, **(expiry or {})},
            encodings=repostate.available_encodings(),
            limits=Limits.primary(),
        )
        paths.images.mkdir(parents=True, exist_ok=True)
        repostate.save(builder, paths.metadata)
        write_json(paths.staged, [], mode=STATE_MODE)
        token = secrets.token_urlsafe(32)
        write_json(paths.tokens, {hash_token(token): ADMIN}, mode=SECRET_MODE)
        if bins is not None:
            repo = cls(repo_dir, now, offline_dir=offline_dir, passphrase_env=passphrase_env)
            delegations.delegate_bins(repo, now, bins)
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
            self.config.hashes,
            hardware_ids=list(hardware_ids),
            release_counter=release_counter,
        )
        if custom:
            tf.custom_extra = dict(custom)
        tf.shall_match = shall_match
        self.store_image(data)
        self._stage([tf])
        return tf

    def stage_targets(
        self, items: Iterable[tuple[str, bytes, list[str], int | None]]
    ) -> list[TargetFile]:
        """Stage many images at once (path, bytes, hardware ids, release counter): one
        write of the staged list for all of them (a hash-bin repository's bulk load)."""
        out = []
        for path, data, hardware_ids, counter in items:
            check_target_path(path)
            if not hardware_ids:
                raise MalformedInput(f"{path[:64]}: a target needs at least one hardware id")
            self.limits.check_bytes("image", len(data), self.limits.image_bytes)
            out.append(
                TargetFile.from_data(
                    path,
                    data,
                    self.config.hashes,
                    hardware_ids=list(hardware_ids),
                    release_counter=counter,
                )
            )
            self.store_image(data)
        self._stage(out)
        return out

    def _stage(self, entries: list[TargetFile]) -> None:
        paths = {tf.path for tf in entries}
        with dir_lock(self.paths.root):
            staged = [s for s in read_json(self.paths.staged, []) if s["path"] not in paths]
            staged += [{"path": tf.path, "entry": tf.to_dict()} for tf in entries]
            write_json(self.paths.staged, staged, mode=STATE_MODE)

    def staged(self) -> list[TargetFile]:
        return [
            TargetFile.from_dict(s["path"], s["entry"], self.limits)
            for s in read_json(self.paths.staged, [])
        ]

    # --- offline operations ------------------------------------------------------------------

    @contextlib.contextmanager
    def mutation(self, now: datetime) -> Iterator[RepositoryBuilder]:
        """Hold the directory lock and work on the repository as it is on disk now: another
        process (the server, an offline command) may have changed it since this one loaded
        it, and versions must never be issued twice."""
        with dir_lock(self.paths.root):
            self.builder = self._load(now)
            try:
                yield self.builder
            except PublishRefused as e:
                self.builder = self._load(now)  # nothing was written; drop the change
                raise PublishRefused(
                    e.role, e.encoding, e.reason, size=e.size, cap=e.cap, advice=self._advice(e)
                ) from None
            except BaseException:
                self.builder = self._load(now)
                raise

    def _advice(self, err: PublishRefused) -> str:
        """What to do when a role grows past what its readers accept (issue 20)."""
        b = self.builder
        if err.role == "targets" and delegations.bins_of(b) is None:
            n = len(b.targets.targets) + len(self.staged())
            return (
                f"list the images in hash bins: `uptane-image-repo delegate-bins"
                f" {self.paths.root} --bits {delegations.suggest_bits(n)}` moves the"
                f" top-level images into them (a targets change, signed with the targets keys;"
                f" docs/image-repo.md, 'Large repositories')"
            )
        if err.role == "snapshot":
            return "fewer roles: a snapshot lists every bin and delegated role; use fewer bits"
        return (
            f"split {err.role}: a supplier releases fewer images per role, or (hash bins) the"
            f" repository needs more bins than it was made with"
        )

    def find_targets(self, path: str) -> list[TargetFile]:
        """The entries listed for ``path`` by the roles that may list it: its hash bin, or
        the top-level targets and each delegated role in order. Decodes only those."""
        b = self.builder
        name = delegations.bin_for(b, path)
        roles = ([name] if b.has_role(name) else []) if name else ["targets", *b.delegated]
        found = []
        for role in roles:
            model = b.role(role)
            assert isinstance(model, Targets)
            tf = model.targets.get(path)
            if tf is not None:
                found.append(tf)
        return found

    def bin_for(self, path: str) -> str | None:
        """The hash bin that holds ``path``, if the repository delegates to bins."""
        return delegations.bin_for(self.builder, path)

    def sign_staged(self, now: datetime) -> Outcome:
        """Sign the staged entries: those in hash bins at once with the online bin keys;
        the others (or, with nothing staged, a renewal of the same targets) as the next
        top-level targets, at once if this machine holds a threshold of the targets keys,
        else as a pending file for a ceremony."""
        staged = self.staged()
        binned = [tf for tf in staged if self.bin_for(tf.path) is not None]
        if binned:
            self.sign_into_bins(now, binned)
            if len(binned) == len(staged):
                return Outcome("bins", self.builder.targets.version, True)
        pending = image_keys.start_targets(self, now)
        return image_keys.carry_out(self, now, pending, ("targets",), require_local=True)

    def sign(self, now: datetime) -> int:
        """:meth:`sign_staged`, for one who holds the targets keys; the targets version."""
        out = self.sign_staged(now)
        if not out.published:
            raise PermissionError(
                f"targets version {out.version} needs more signatures: pending file"
                f" {out.pending} (uptane-image-repo ceremony sign/status/publish)"
            )
        return self.builder.targets.version

    def sign_into_bins(self, now: datetime, entries: list[TargetFile]) -> None:
        """Sign ``entries`` into their hash bins at once with the online bin keys, and
        unstage them: one publish re-signs the bins they fall in, snapshot and timestamp.
        Their images must be stored already (:meth:`stage_target` does it)."""
        with self.mutation(now) as b:
            for tf in entries:
                b.add_target(tf, role=delegations.bin_for(b, tf.path) or "targets")
            b.publish(now)
            repostate.save(b, self.paths.metadata)
            self._unstage(tf.path for tf in entries)

    def _unstage(self, paths: Iterable[str]) -> None:
        done = set(paths)
        staged = read_json(self.paths.staged, [])
        write_json(self.paths.staged, [s for s in staged if s["path"] not in done], mode=STATE_MODE)

    def install_targets(
        self, b: RepositoryBuilder, model: Targets, files: dict[str, bytes]
    ) -> None:
        """A new top-level targets signed in a ceremony: installed, the roles it delegates
        to made or dropped, and its staged entries unstaged (caller holds the lock)."""
        before = b.targets.targets if delegations.bins_of(b) is None else {}
        b.install_signed("targets", model, files)
        delegations.reconcile(self, b)
        delegations.move_into_bins(b, before)
        self._unstage(model.targets)

    def delegate(
        self,
        role: str,
        paths: list[str],
        hardware_ids: list[str],
        now: datetime,
        *,
        keys: list[Key] | None = None,
        threshold: int = 1,
        terminating: bool = True,
        members: list[tuple[str, list[Key], int]] | None = None,
        agree: int | None = None,
    ) -> tuple[Outcome, dict[str, str]]:
        """Delegate ``paths`` (and ``hardware_ids``) to supplier role(s) that hold their
        own keys (:func:`director.image_delegations.delegate`); the outcome and an upload
        token for each role."""
        out = delegations.delegate(
            self,
            now,
            role,
            paths,
            hardware_ids,
            list(keys or []),
            threshold=threshold,
            terminating=terminating,
            members=members,
            agree=agree,
        )
        names = [m[0] for m in members] if members else [role]
        return out, {n: self.add_token(n) for n in names}

    def rotate_root(self, now: datetime, *, scheme: str = ED25519) -> int:
        """Replace the root key with a new one made in the offline directory: the new root
        is signed by the old and the new keys (§5.4.4.3: a client accepts N+1 only with a
        threshold of both). Returns the new root version."""
        if self.offline is None or not self.offline.signers("root"):
            raise PermissionError("the offline root key is needed (--offline-keys)")
        (out,) = image_keys.rotate_offline(self, now, "root", [], scheme=scheme)
        if not out.published:
            raise PermissionError(
                f"root version {out.version} needs more signatures: {out.pending}"
            )
        return len(self.builder.root_history)

    # --- online operations -------------------------------------------------------------------

    def refresh(self, now: datetime, *, margin: timedelta | None = None) -> bool:
        """Re-sign snapshot and timestamp when they expire within ``margin`` (default: half
        their lifetime). Returns True if anything was re-signed."""
        changed = False
        with self.mutation(now) as b:
            snap_life = b.expiry["snapshot"]
            if b.snapshot.expires - now <= (margin or snap_life / 2):
                b.mark("snapshot")
                changed = True
            for role in b.delegated:  # expiry from current.json: no role is decoded
                life = b.lifetime(role)
                if b.signers_of(role) and b.expires_of(role) - now <= (margin or life / 2):
                    b.mark(role)  # an online role (a hash bin): re-signed here
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
                dest = out / "metadata" / fname
                if fname.startswith("timestamp."):
                    last.append((dest, data))
                elif not (fname.split(".", 1)[0].isdigit() and dest.exists()):
                    atomic_write(dest, data, mode=PUBLIC_MODE)  # versioned files never change
        for path, data in last:
            atomic_write(path, data, mode=PUBLIC_MODE)
        return count

    # --- uploads (§5.3.1: the uploader's delegation chain decides; director.image_uploads) ---

    def delegation(self, role: str) -> delegations.Found:
        """Where ``role``'s authority comes from; Forbidden if it is not delegated."""
        return uploads.delegation(self, role)

    def check_image_upload(self, uploader: str, path: str) -> str:
        """Which role an image upload at ``path`` belongs to; Forbidden if the uploader's
        delegation does not cover the path."""
        return uploads.check_image_upload(self, uploader, path)

    def upload_image(self, uploader: str, path: str, data: bytes) -> TargetFile:
        """Accept image bytes from ``uploader``; they are served only once signed metadata
        lists them."""
        self.check_image_upload(uploader, path)
        self.limits.check_bytes("image", len(data), self.limits.image_bytes)
        self.store_image(data)
        return TargetFile.from_data(path, data, self.config.hashes)

    def upload_metadata(
        self, uploader: str, role: str, data: bytes, encoding: str, now: datetime
    ) -> tuple[int, bool]:
        """Install ``role``'s targets metadata signed elsewhere
        (:func:`director.image_uploads.upload_metadata`): the version and whether it is
        now published; raises and changes nothing otherwise."""
        with self.mutation(now):
            return uploads.upload_metadata(self, uploader, role, data, encoding, now)


def check_upload_size(size: int, cap: int) -> None:
    if size > cap:
        raise EndlessDataAttack(f"upload of {size} bytes exceeds the {cap}-byte cap")


__all__ = ["ADMIN", "JSON", "Conflict", "Forbidden", "ImageRepository", "path_matches"]
