"""The Image repository's settings (``DIR/repo.json``): where its online keys are, and
how long each role is signed for.

```json
{"key_source": {"kind": "pkcs11", "uri": "pkcs11:token=image-online", "pin_env": "PIN"},
 "expiry_days": {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1,
                 "delegated": 90, "bins": 7}}
```

``key_source`` is a :func:`keystore.open_source` setting (default: unencrypted PEM files
in ``DIR/online-keys``). ``tls`` (:class:`director.tls.TlsSettings`: certificate, key,
``public_read``) and ``object_store`` (:func:`storage.objects.open_objects`: where the
static layout is kept for vehicles) are the service's (issue 19). ``expiry_days`` takes
the top-level roles, ``delegated`` (every delegated role), a delegated role by name, and
a hash-bin prefix (every bin). ``hashes`` lists the algorithms each new image entry
lists (default ``["sha256", "sha512"]``; every ECU checks every listed hash, so
``["sha256"]`` verifies an image about three times as fast on a CPU with SHA-256
instructions: bench figure 4, docs/image-repo.md "Hash algorithms"). A missing file means
the defaults. The file holds no secret (a passphrase or PIN comes from the environment
variable it names), and is read by the offline commands and the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from keystore import KeyStore, check_spec, open_source
from storage import read_json, write_json

CONFIG = "repo.json"
CONFIG_MODE = 0o644
ONLINE_DIR = "online-keys"
#: at least a minute, at most ten years
MIN_DAYS, MAX_DAYS = 1 / 1440, 3650.0


def check_expiry(days: Any) -> dict[str, float]:
    """Lifetimes in days by role, each a number in range."""
    if not isinstance(days, dict):
        raise ValueError("expiry_days must map roles to days")
    out = {}
    for role, value in days.items():
        if not isinstance(role, str) or isinstance(value, bool):
            raise ValueError(f"expiry_days: bad entry {role!r}")
        if not isinstance(value, int | float) or not MIN_DAYS <= value <= MAX_DAYS:
            raise ValueError(f"expiry_days.{role}: give days between a minute and ten years")
        out[role] = float(value)
    return out


_KNOWN = ("key_source", "expiry_days", "tls", "object_store", "hashes")
#: what a new image entry lists unless ``hashes`` says otherwise
DEFAULT_HASHES = ("sha256", "sha512")
#: the algorithms an OEM may choose from: SHA-2, which every ECU of the stack checks and
#: which uptane.identity counts as strong
HASH_CHOICES = ("sha256", "sha384", "sha512")


def check_hashes(value: Any) -> tuple[str, ...]:
    """A non-empty list of distinct algorithms from :data:`HASH_CHOICES`, in order."""
    if (
        not isinstance(value, list | tuple)
        or not value
        or len(set(value)) != len(value)
        or any(v not in HASH_CHOICES for v in value)
    ):
        raise ValueError(f"hashes: give one or more of {', '.join(HASH_CHOICES)}, each once")
    return tuple(value)


@dataclass
class ImageRepoConfig:
    """``repo.json``."""

    key_source: dict[str, Any] | None = None
    expiry_days: dict[str, float] = field(default_factory=dict)
    #: the service's TLS and who may download (director.tls.TlsSettings; issue 19)
    tls: dict[str, Any] | None = None
    #: where the static layout is kept for vehicles and other nodes (storage.objects;
    #: director.objectmirror), e.g. {"url": "s3://bucket/repo", "endpoint_url": ...}
    object_store: dict[str, Any] | None = None
    #: the hash algorithms each new image entry lists
    hashes: tuple[str, ...] = DEFAULT_HASHES

    @classmethod
    def load(cls, repo_dir: Path) -> ImageRepoConfig:
        d = read_json(Path(repo_dir) / CONFIG, {})
        if not isinstance(d, dict) or set(d) - set(_KNOWN):
            raise ValueError(f"{repo_dir / CONFIG}: only {', '.join(_KNOWN)} are known")
        spec = d.get("key_source")
        return cls(
            None if spec is None else check_spec(spec),
            check_expiry(d.get("expiry_days", {})),
            d.get("tls"),
            d.get("object_store"),
            check_hashes(d.get("hashes", list(DEFAULT_HASHES))),
        )

    def save(self, repo_dir: Path) -> None:
        d: dict[str, Any] = {"expiry_days": self.expiry_days, "hashes": list(self.hashes)}
        for name in ("key_source", "tls", "object_store"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        write_json(Path(repo_dir) / CONFIG, d, mode=CONFIG_MODE)

    @property
    def expiry(self) -> dict[str, timedelta]:
        return {k: timedelta(days=v) for k, v in self.expiry_days.items()}

    def online(self, repo_dir: Path) -> KeyStore:
        """The online key source (snapshot, timestamp, hash bins)."""
        return open_source(self.key_source, Path(repo_dir), ONLINE_DIR)


__all__ = [
    "CONFIG",
    "DEFAULT_HASHES",
    "HASH_CHOICES",
    "ImageRepoConfig",
    "check_expiry",
    "check_hashes",
]
