"""Where signing keys come from: a small interface that key files fill today and an HSM
(PKCS#11) can fill later.

Online keys (snapshot, timestamp, and the Director's targets) are read by servers through a
:class:`KeySource`. Offline keys (roots, the Image repository's targets, suppliers' keys)
live in a separate directory that no server is configured to read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from storage import atomic_write
from uptane.keys import ED25519, Key, PrivateKey, Signer


class KeySource(Protocol):
    """Signers for a role. ``signers(role)`` returns the signers available for ``role``
    (empty if none are held here)."""

    def signers(self, role: str) -> list[Signer]: ...


class FileKeySource:
    """Keys as PEM files ``ROLE.pem`` (and ``ROLE.N.pem`` for more keys of one role) in one
    directory. Files must not be readable by group or others."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._cache: dict[str, list[Signer]] = {}

    def signers(self, role: str) -> list[Signer]:
        if role not in self._cache:
            found: list[Signer] = []
            for p in sorted(self.directory.glob(f"{role}*.pem")):
                stem = p.name[: -len(".pem")]
                if stem == role or (
                    stem.startswith(role + ".") and stem[len(role) + 1 :].isdigit()
                ):
                    found.append(PrivateKey.from_pem(p.read_bytes()))
            self._cache[role] = found
        return list(self._cache[role])

    def describe(self) -> str:
        """Where the keys are, for the service's start-up lines."""
        return f"PEM files in {self.directory} (ROLE.pem)"

    def public_keys(self, role: str) -> list[Key]:
        return [s.key for s in self.signers(role)]

    def add(self, role: str, key: PrivateKey) -> Path:
        """Store ``key`` as a new key file for ``role`` and return its path."""
        existing = self.signers(role)
        name = f"{role}.pem" if not existing else f"{role}.{len(existing)}.pem"
        path = self.directory / name
        save_private_key(path, key)
        self._cache.pop(role, None)
        return path

    def replace(self, role: str, key: PrivateKey) -> Path:
        """Make ``key`` the only key file of ``role`` (old files are kept as ``.old``)."""
        for p in self.directory.glob(f"{role}*.pem"):
            p.rename(p.with_suffix(".pem.old"))
        self._cache.pop(role, None)
        return self.add(role, key)


def generate(scheme: str = ED25519) -> PrivateKey:
    """A fresh private key."""
    return PrivateKey.generate(scheme)


def save_private_key(path: Path, key: PrivateKey) -> None:
    """Write a private key readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, key.to_pem(), mode=0o600)
