"""The Director (§5.3.2): the service layer that the HTTP app and the CLI share.

:class:`Director` holds one Director's configuration, database and keys and wires the
parts that do the work, each in its own module, along the data path:

- :mod:`director.vehicles`: the inventory of vehicles and ECUs, and every listing;
- :mod:`director.bundles`: assignments and bundles (an assignment goes out in a bundle,
  and a vehicle's reports end it), their states asked of :mod:`director.lifecycle`; the
  checks an assignment passes first (:mod:`director.assigning`,
  :mod:`director.dependencies`);
- :mod:`director.campaigns`: campaigns in waves over selections of the fleet (saved
  groups: :mod:`director.groups`);
- :mod:`director.publishing`: each vehicle's targets, snapshot and timestamp, signed in
  the transaction that changed them, and served from memory;
- :mod:`director.manifests`: vehicle version manifests, checked and recorded with group
  commit (:mod:`director.groupcommit`), which move the bundle in flight on;
- :mod:`director.keyrotation`: the keys and the offline-signed root.

Every change is one database transaction (manifests arriving together share one, and one
durable commit, each with the outcome it would have had alone).

Directory layout of a Director ``DIR``: ``director.json`` (configuration, the SHA-256 of the
admin token), ``online-keys/`` (targets, snapshot, timestamp), ``root/N.root.EXT`` (the
offline-signed Director root), ``image-root.json`` (the pinned Image-repository root) and,
by default, ``inventory.db``. The Director root key lives in ``DIR.offline-keys``.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

from director import encrypting, keyrotation
from director import inventory as inv
from director.bundles import Bundles
from director.campaigns import Campaigns, CampaignSpec
from director.common import (
    ECU_RE,
    HWID_RE,
    VIN_RE,
    Conflict,
    Invalid,
    NotFound,
    Unavailable,
    utcnow,
)
from director.config import (
    ADMIN,
    DEFAULT_EXPIRY_DAYS,
    ROLES,
    VIEWER,
    Config,
    default_offline_dir,
    hash_token,
)
from director.encrypting import CIPHERTEXTS, CiphertextStore, ImageSource, Sealer
from director.groups import Groups
from director.imageview import ImageRepoView, source_for
from director.lifecycle import IllegalTransition
from director.manifests import ManifestIntake
from director.publishing import Publisher
from director.repostate import director_encodings
from director.retention import Retention
from director.vehicles import EcuSpec, Fleet, key_from_json
from director.watch import FileWatch
from keystore import KeySource
from storage import atomic_write
from uptane.encryption import EncryptionPublicKey
from uptane.errors import BadEcuId
from uptane.keys import ED25519
from uptane.limits import Limits
from uptane.metadata import JSON

#: the pinned Image-repository root is public (any vehicle holds it)
IMAGE_ROOT_MODE = 0o644


class Director:
    """One Director: configuration, keys, database, Image-repository view, and its parts
    (:attr:`fleet`, :attr:`bundles`, :attr:`campaigns`, :attr:`groups`, :attr:`publisher`,
    :attr:`manifests`)."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], datetime] = utcnow,
        keys: KeySource | None = None,
        image_view: ImageRepoView | None = None,
        db_url: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.config = Config.load(self.dir / "director.json")
        if db_url is not None:
            self.config.db_url = db_url
        self.clock = clock
        self.limits = limits or Limits.primary()
        self.encodings = director_encodings()
        self.engine: Engine = inv.make_engine(self.config.db_url)
        self._image_view = image_view
        self.publisher = Publisher(
            self.dir,
            self.config,
            self.engine,
            keys or self.config.online_keys(self.dir),
            clock=clock,
            limits=self.limits,
            encodings=self.encodings,
        )
        self.fleet = Fleet(self.engine, self.publisher, clock=clock, limits=self.limits)
        #: encrypted images and deltas (issue 17): ciphertexts in DIR/ciphertexts
        source = ImageSource(self.config.image_repo, lambda: self.image_view, self.limits)
        self.ciphertexts = CiphertextStore(self.dir / CIPHERTEXTS, source)
        self.bundles = Bundles(
            self.engine,
            self.fleet,
            self.publisher,
            lambda: self.image_view,
            clock=clock,
            config=self.config,
            sealer=Sealer(self.ciphertexts, lambda: self.image_view),
        )
        self.groups = Groups(self.engine, clock=clock)
        self.campaigns = Campaigns(self.engine, self.bundles, self.groups, clock=clock)
        self.manifests = ManifestIntake(
            self.engine, self.config, self.bundles, self.publisher, clock=clock, limits=self.limits
        )
        #: manifests share transactions and durable commits (director/groupcommit.py)
        self.writer = self.manifests.writer
        #: manifests and nonces past the retention window pruned (docs/retention.md)
        self.retention = Retention(self.engine, self.config, clock)
        #: ``director.json`` as an offline ``token add`` may change it
        self._config_watch = FileWatch(self.dir / "director.json")
        self._config_lock = threading.Lock()

    # --- setup ----------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        image_repo: str,
        image_root: bytes,
        *,
        offline_dir: Path | None = None,
        db_url: str | None = None,
        now: datetime | None = None,
        scheme: str = ED25519,
        expiry_days: dict[str, float] | None = None,
        key_source: dict[str, Any] | None = None,
        passphrase_env: str | None = None,
    ) -> str:
        """Create keys, the Director root (signed offline now), the configuration and the
        database schema. Returns the admin token, which is stored only as a hash. The
        online keys are made in ``key_source`` (default: files in ``DIR/online-keys``)."""
        directory = Path(directory)
        if (directory / "director.json").exists():
            raise FileExistsError(f"{directory} already holds a Director")
        offline = offline_dir or default_offline_dir(directory)
        probe = Config("", "", "", key_source=key_source)
        keyrotation.create(
            directory,
            offline,
            now or utcnow(),
            scheme,
            probe.online_keys(directory),
            passphrase_env=passphrase_env,
        )
        # pin the Image repository's root after checking it is one (threshold-signed)
        from uptane.trust import RepositoryTrust

        RepositoryTrust("image", image_root, Limits.primary())
        atomic_write(directory / "image-root.json", image_root, mode=IMAGE_ROOT_MODE)
        token = secrets.token_urlsafe(32)
        url = db_url or f"sqlite:///{(directory / 'inventory.db').resolve()}"
        cfg = Config(url, image_repo, hash_token(token), key_source=key_source)
        if expiry_days:
            cfg.expiry_days.update(expiry_days)
        inv.migrate(url)
        cfg.save(directory / "director.json")
        return token

    @property
    def image_view(self) -> ImageRepoView:
        """The Image repository as the Director reads it (made on first use)."""
        if self._image_view is None:
            self._image_view = ImageRepoView(
                source_for(self.config.image_repo),
                (self.dir / "image-root.json").read_bytes(),
                self.clock,
                limits=self.limits,
            )
        return self._image_view

    @property
    def keys(self) -> KeySource:
        """The online keys (targets, snapshot, timestamp) as currently loaded."""
        return self.publisher.keys

    @property
    def root_files(self) -> dict[int, dict[str, bytes]]:
        """Every Director root version: version -> encoding -> signed bytes."""
        return self.publisher.root_files

    def check_admin_token(self, token: str) -> bool:
        return self.token_role(token) == ADMIN

    def token_role(self, token: str) -> str | None:
        """``admin`` for a token with the admin scope, ``viewer`` for any other valid one,
        None for one unknown, expired or revoked (named tokens: director/tokens.py; a
        token made meanwhile by another process or node counts at once)."""
        from director.tokens import Caller, Tokens

        found = Tokens(self.engine, self.config, self.clock).check(token)
        if not isinstance(found, Caller):
            return None
        return ADMIN if found.may("admin") else VIEWER

    def add_token(self, role: str) -> str:
        """Create a token that never expires for ``role`` (``admin``: the admin scope,
        ``viewer``: read), named ``ROLE-XXXXXXXX``; returns it (only its hash is stored)."""
        from director.audit import cli_actor
        from director.tokens import Tokens

        if role not in ROLES:
            raise Invalid(f"role must be one of {ROLES}")
        made = Tokens(self.engine, self.config, self.clock).create(
            f"{role}-{secrets.token_hex(4)}",
            ["admin" if role == ADMIN else "read"],
            lifetime=None,
            created_by=cli_actor(),
        )
        return str(made["token"])

    def reload_config(self) -> list[str]:
        """Take in what an offline command changed in ``director.json`` (tokens, settings);
        returns one line per change, for the log."""
        with self._config_lock:
            if not self._config_watch.changed():
                return []
            try:
                names = self.config.reload(self.dir / "director.json")
            except (OSError, ValueError, TypeError) as e:
                return [f"director.json changed but cannot be read ({e}); kept the settings"]
        return [f"director.json: picked up {', '.join(names)}"] if names else []

    def watch(self) -> list[str]:
        """What the service checks twice a second: ``director.json`` changed by an offline
        command, and a Director root or key rotation (``rotate-key``) made by another
        process, which is loaded (every vehicle re-signed with the current keys)."""
        events = self.reload_config()
        if self.publisher.reload_keys():
            events.append(
                f"picked up Director root version {max(self.root_files)}: keys reloaded,"
                " every vehicle's metadata signed again"
            )
        return events

    def describe(self) -> dict[str, str]:
        """What ``serve`` prints when it starts: where the database and the keys are."""
        from sqlalchemy.engine import make_url

        keys = self.publisher.keys
        describe = getattr(keys, "describe", None)
        return {
            "directory": str(self.dir),
            "database": make_url(self.config.db_url).render_as_string(hide_password=True),
            "keys": describe() if callable(describe) else type(keys).__name__,
            "root": f"Director root version {max(self.root_files)}",
            "image_repo": self.config.image_repo,
        }

    def dispose(self) -> None:
        """Finish the manifests already queued, stop the writer, close the connections."""
        self.writer.close()
        self.engine.dispose()

    # --- vehicles and ECUs (director.vehicles) -----------------------------------------------

    def register_vehicle(self, vin: str, ecus: Iterable[EcuSpec]) -> dict[str, Any]:
        """Add a vehicle with its ECUs (exactly one primary) and sign its first metadata."""
        return self.fleet.register_vehicle(vin, ecus)

    def add_ecu(self, vin: str, ecu: EcuSpec) -> dict[str, Any]:
        """Add a secondary ECU to a registered vehicle."""
        status = self.fleet.add_ecu(vin, ecu)
        self.manifests.forget(vin)
        return status

    def list_vehicles(self) -> list[dict[str, Any]]:
        return self.fleet.list_vehicles()

    def vehicle_status(self, vin: str) -> dict[str, Any]:
        """Everything the OEM sees about one vehicle."""
        return self.fleet.vehicle_status(vin)

    def ecus_of(self, conn: Connection, vid: int) -> list[Any]:
        return self.fleet.ecus_of(conn, vid)

    def list_assignments(
        self, *, vin: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        return self.fleet.list_assignments(vin=vin, state=state)

    def list_attacks(self, *, vin: str | None = None) -> list[dict[str, Any]]:
        return self.fleet.list_attacks(vin=vin)

    # --- assignments and bundles (director.bundles) ------------------------------------------

    def assign(
        self,
        vin: str,
        items: Iterable[tuple[str, str]],
        *,
        force: bool = False,
        encrypt: dict[str, bool | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Assign images to ECUs of one vehicle (ECU serial, target path); one bundle, or
        several when one image needs another installed first (``force``: allow a
        downgrade; ``encrypt``: by ECU serial, encrypt or not, else the rules decide)."""
        return self.bundles.assign(vin, items, force=force, encrypt=encrypt)

    # --- encryption (director.encrypting) ------------------------------------------------------

    def set_encryption_key(self, vin: str, serial: str, key: EncryptionPublicKey) -> Any:
        """Register an ECU's (new) encryption public key."""
        return self.fleet.set_encryption_key(vin, serial, key)

    def set_encryption_rule(self, scope: str, value: str, encrypt: bool | None) -> Any:
        """Encrypt (or not; None: no rule) what is assigned from now on for an image
        (``scope`` "image") or a hardware id (``scope`` "hardware")."""
        with self.engine.begin() as conn:
            return encrypting.set_rule(conn, scope, value, encrypt, self.clock())

    def encryption_rules(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return encrypting.list_rules(conn)

    def ciphertext(self, name: str) -> Path | None:
        """The file of a ciphertext this Director made (``HASH.enc``), or None."""
        return self.ciphertexts.path(name)

    # --- campaigns and groups (director.campaigns, director.groups) --------------------------

    def campaign(self, spec: CampaignSpec) -> dict[str, Any]:
        """Create a campaign and send its first wave (:meth:`Campaigns.create`)."""
        return self.campaigns.create(spec)

    def tick(self) -> list[str]:
        """What the service does every second: fail assignments whose ECU stayed
        unreachable past the deadline, move campaigns on, and prune what is past the
        retention window (once every ``retention_interval_seconds``). Returns what
        happened, one line each."""
        events = []
        failed = self.bundles.expire_unreachable()
        if failed:
            events.append(f"{failed} assignment(s) failed: ECU unreachable past the deadline")
        return events + self.campaigns.tick() + self.retention.tick()

    def cancel(self, assignment_id: int) -> dict[str, Any]:
        """Cancel a pending assignment (IllegalTransition, 409, for any other)."""
        return self.bundles.cancel(assignment_id)

    # --- manifests (director.manifests) -------------------------------------------------------

    def process_manifest(self, vin: str, data: bytes, encoding: str = JSON) -> dict[str, Any]:
        """Check a vehicle version manifest against the inventory and record it
        (:meth:`director.manifests.ManifestIntake.process`)."""
        return self.manifests.process(vin, data, encoding)

    # --- keys and per-vehicle metadata (director.keyrotation, director.publishing) ----------

    def rotate_key(
        self, role: str, offline_dir: Path, now: datetime | None = None, *, scheme: str = ED25519
    ) -> int:
        """New key for ``role``, next root signed with the offline root key here, every
        vehicle re-signed (:func:`director.keyrotation.rotate_key`); returns the new root
        version. The running service picks it up (:meth:`reload_keys`). With a t-of-n
        root, use the ceremony (``uptane-director rotate-key``, ``ceremony``)."""
        out = keyrotation.rotate_key(
            self.publisher,
            role,
            keyrotation.offline_source(offline_dir),
            now or self.clock(),
            scheme=scheme,
        )
        if not out.published:
            raise PermissionError(
                f"root version {out.version} needs more signatures: {out.pending}"
            )
        return out.version

    def reload_keys(self, *, force: bool = False) -> bool:
        """Pick up a root or key rotation made by another process (re-signs everything)."""
        return self.publisher.reload_keys(force=force)

    def invalidate(self, vin: str) -> None:
        """Forget the cached signed files of ``vin``."""
        self.publisher.invalidate(vin)

    def cached_file(self, vin: str, name: str) -> bytes | None:
        """A fresh cache hit, or None; memory only (safe on the event loop)."""
        return self.publisher.cached_file(vin, name)

    def metadata_file(self, vin: str, name: str) -> bytes | None:
        """A per-vehicle metadata file by name (``N.root.json``, ``timestamp.der``, ...)."""
        return self.publisher.metadata_file(vin, name)

    def refresh_expiring(self) -> int:
        """Re-sign the metadata of every vehicle whose timestamp nears expiry."""
        return self.publisher.refresh_expiring()


__all__ = [
    "ADMIN",
    "DEFAULT_EXPIRY_DAYS",
    "ECU_RE",
    "HWID_RE",
    "ROLES",
    "VIEWER",
    "VIN_RE",
    "BadEcuId",
    "CampaignSpec",
    "Config",
    "Conflict",
    "Director",
    "EcuSpec",
    "IllegalTransition",
    "Invalid",
    "NotFound",
    "Unavailable",
    "default_offline_dir",
    "hash_token",
    "key_from_json",
]
