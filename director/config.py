"""A Director's configuration (``DIR/director.json``, mode 0600) and its API tokens, which
are stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from director.common import Invalid
from keystore import KeyStore, check_spec, open_source
from storage import read_json, write_json

ADMIN, VIEWER = "admin", "viewer"
ROLES = (ADMIN, VIEWER)

DEFAULT_EXPIRY_DAYS = {"targets": 30.0, "snapshot": 7.0, "timestamp": 1.0}

#: director.json holds the admin token's hash and the database URL (maybe a password)
CONFIG_MODE = 0o600


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def default_offline_dir(director_dir: Path) -> Path:
    """Where ``init`` puts the Director root key: beside ``DIR``, never inside it."""
    return director_dir.parent / f"{director_dir.name}.offline-keys"


@dataclass
class Config:
    """``director.json``."""

    db_url: str
    image_repo: str
    admin_token_sha256: str
    expiry_days: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EXPIRY_DAYS))
    max_body_bytes: int = 1024 * 1024
    report_skew_seconds: int = 300
    cache_seconds: float = 2.0
    cache_vehicles: int = 10_000
    #: an assignment in flight whose ECU the Primary names unreachable this long (since the
    #: bundle went out) fails ``unreachable``, and the vehicle gets its next bundle
    unreachable_deadline_seconds: int = 7 * 24 * 3600
    #: further API tokens: SHA-256 -> role ("admin" or "viewer", read-only)
    tokens: dict[str, str] = field(default_factory=dict)
    #: where the online keys are (:func:`keystore.open_source`); None: PEM files in
    #: ``DIR/online-keys``. Holds no secret: a PIN or passphrase comes from the
    #: environment variable it names
    key_source: dict[str, Any] | None = None
    #: TLS, client certificates of vehicles and trusted proxies (director.tls.TlsSettings;
    #: paths relative to DIR); None: plain HTTP, vehicles not asked for a certificate. A
    #: change needs a restart
    tls: dict[str, Any] | None = None
    #: the services' log: "auto" (text on a terminal, JSON lines otherwise), "json", "text"
    log_format: str = "auto"
    #: one log line per request (its id, route, status, time); metrics are kept either way
    log_requests: bool = True
    #: campaigns (issue 20): members recorded, released or cancelled per transaction, and
    #: vehicles sent per transaction when a wave starts (each signs that vehicle's
    #: metadata): sized so one transaction takes well under 100 ms (measured in
    #: director/campaignbatches.py)
    campaign_batch_members: int = 1000
    campaign_batch_vehicles: int = 2
    #: retention (docs/retention.md): raw manifests and nonces older than this many days
    #: are pruned, and nonce reports older than it refused; 0 or None: keep everything
    retention_days: float | None = 90.0
    #: how often the serving Director prunes, and the rows deleted per transaction
    retention_interval_seconds: int = 3600
    retention_batch_rows: int = 5000
    #: the admin API's listings (director/paging.py): rows per page without ``?limit=``,
    #: and the most ``?limit=`` may ask
    page_limit: int = 500
    page_limit_max: int = 5000
    #: vehicles one bulk registration (``POST /api/v1/vehicles/bulk``) may carry
    bulk_max_vehicles: int = 5000

    @classmethod
    def load(cls, path: Path) -> Config:
        d = read_json(path)
        if d is None:
            raise FileNotFoundError(f"no Director configuration at {path}")
        try:
            cfg = cls(**d)
        except TypeError as e:
            raise ValueError(f"{path}: {e}") from None
        if cfg.key_source is not None:
            check_spec(cfg.key_source)
        cfg.check_batches()
        return cfg

    def check_batches(self) -> None:
        """Refuse batch sizes below 1 and a retention window too short to hold the
        report window (docs/retention.md): ValueError saying what to set."""
        for name in (
            "campaign_batch_members",
            "campaign_batch_vehicles",
            "retention_interval_seconds",
            "retention_batch_rows",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"director.json: {name} must be a whole number from 1")
        days = self.retention_days
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, int | float) or not days >= 0
        ):
            raise ValueError("director.json: retention_days is a number of days, 0 or more")
        if days and days * 86400 < 4 * self.report_skew_seconds:
            raise ValueError(
                f"director.json: retention_days {days} is shorter than four times"
                f" report_skew_seconds ({self.report_skew_seconds} s): raise it, or set 0 to"
                " keep manifests and nonces forever"
            )

    def tls_settings(self, directory: Path) -> Any:
        """The ``tls`` setting, checked (:class:`director.tls.TlsSettings`)."""
        from director.tls import TlsSettings

        return TlsSettings.from_dict(self.tls, directory)

    def reload(self, path: Path) -> list[str]:
        """Take the settings an offline command changed in ``path`` (tokens, the admin
        token, expiry, caps, deadlines) into this object, which the running service's
        parts share; returns the names of those that changed. ``db_url`` and
        ``image_repo`` need a restart: a change of them is named, not taken."""
        fresh = Config.load(path)
        changed = []
        for name, value in fresh.__dict__.items():
            if getattr(self, name) == value:
                continue
            if name in ("db_url", "image_repo", "key_source", "tls", "log_format"):
                changed.append(f"{name} (needs a restart)")
                continue
            setattr(self, name, value)
            changed.append(name)
        return changed

    def save(self, path: Path) -> None:
        write_json(path, self.__dict__, mode=CONFIG_MODE)

    @property
    def expiry(self) -> dict[str, timedelta]:
        """Each role's lifetime: targets, snapshot, timestamp (signed online, re-signed
        before half of it is gone) and root (the next root ceremony's)."""
        return {k: timedelta(days=v) for k, v in self.expiry_days.items()}

    def online_keys(self, directory: Path) -> KeyStore:
        """The online key source this configuration names."""
        spec = None if self.key_source is None else check_spec(self.key_source)
        return open_source(spec, directory, "online-keys")

    def token_role(self, token: str) -> str | None:
        """The role of an API token (``admin`` or ``viewer``), or None if unknown."""
        digest = hash_token(token)
        if hmac.compare_digest(digest, self.admin_token_sha256):
            return ADMIN
        for known, role in self.tokens.items():
            if hmac.compare_digest(digest, known):
                return role
        return None

    def add_token(self, role: str, path: Path) -> str:
        """Create an API token for ``role`` and save the configuration to ``path``;
        returns the token (only its hash is stored)."""
        if role not in ROLES:
            raise Invalid(f"role must be one of {ROLES}")
        token = secrets.token_urlsafe(32)
        self.tokens[hash_token(token)] = role
        self.save(path)
        return token


__all__ = [
    "ADMIN",
    "DEFAULT_EXPIRY_DAYS",
    "ROLES",
    "VIEWER",
    "Config",
    "default_offline_dir",
    "hash_token",
]
