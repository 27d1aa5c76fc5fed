"""The Primary's TLS settings (issue 19): one ``[tls]`` table used for every repository
(the Director, the Image repository, any TAP 4 repository) and the manifest upload::

    [tls]
    ca = "keys/oem-ca.pem"               # CAs of the servers' certificates (default: the
                                         # system store)
    cert = "keys/vehicle.pem"            # this vehicle's client certificate (mutual TLS)
    key = "keys/vehicle.key"             # its key (PEM; PKCS#8, encrypted or not)
    # key_passphrase_env = "VEHICLE_KEY_PASS"   # the variable holding its passphrase

The Director serves a vehicle's metadata and takes its manifests only over a connection
whose client certificate names that VIN (docs/deploy.md). A key in a PKCS#11 token cannot
serve here: Python's ``ssl`` loads client keys from files only (an OpenSSL provider would
be needed), so a ``pkcs11:`` URI is refused with that reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_KEYS = {"ca", "cert", "key", "key_passphrase_env"}


class TlsConfigError(ValueError):
    """A ``[tls]`` table that cannot be used (the message says what to change)."""


@dataclass(frozen=True)
class TlsConfig:
    """CA bundle, client certificate and key for every HTTPS request of the Primary."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    key_passphrase_env: str | None = None

    def fetcher_kwargs(self) -> dict[str, Any]:
        """:class:`primary.fetcher.Fetcher`'s TLS arguments."""
        out: dict[str, Any] = {}
        if self.ca is not None:
            out["ca_certs"] = self.ca
        if self.cert is not None:
            out["cert_file"] = self.cert
            out["key_file"] = self.key
            out["key_password"] = self.key_password()
        return out

    def pool_kwargs(self) -> dict[str, Any]:
        """urllib3 ``PoolManager`` TLS arguments (the manifest upload)."""
        out: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
        for name, value in self.fetcher_kwargs().items():
            if value is not None:
                out[name] = os.fspath(value) if isinstance(value, Path) else value
        return out

    def key_password(self) -> str | None:
        if self.key_passphrase_env is None:
            return None
        secret = os.environ.get(self.key_passphrase_env)
        if secret is None:
            raise TlsConfigError(
                f"tls.key_passphrase_env: set {self.key_passphrase_env} to the key's passphrase"
            )
        return secret


def parse_tls(value: Any, base: Path) -> TlsConfig | None:
    """The ``[tls]`` table (paths relative to ``base``), or None without one."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TlsConfigError("tls must be a table")
    extra = sorted(set(value) - _KEYS)
    if extra:
        raise TlsConfigError(f"tls: unknown key(s) {', '.join(extra)}")

    def path(name: str) -> Path | None:
        v = value.get(name)
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise TlsConfigError(f"tls.{name} must be a file name")
        if v.startswith("pkcs11:"):
            raise TlsConfigError(
                f"tls.{name}: a PKCS#11 key cannot be used for TLS here (Python's ssl loads "
                "client keys from files only); give a key file, encrypted with "
                "key_passphrase_env if it must not lie in the clear"
            )
        # the files may come later (a certificate issued after provisioning): a missing
        # one fails the first HTTPS request with the file's name
        return base / v

    env = value.get("key_passphrase_env")
    if env is not None and (not isinstance(env, str) or not env):
        raise TlsConfigError("tls.key_passphrase_env must name a variable")
    cfg = TlsConfig(path("ca"), path("cert"), path("key"), env)
    if (cfg.cert is None) != (cfg.key is None):
        raise TlsConfigError("tls: give both cert and key (mutual TLS), or neither")
    return cfg


__all__ = ["TlsConfig", "TlsConfigError", "parse_tls"]
