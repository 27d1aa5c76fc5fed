"""Keys as PEM files in one directory: ``ROLE.pem`` and ``ROLE.N.pem`` for further keys of
one role, encrypted at rest when a passphrase is configured (:mod:`keystore.pem`).

A retired key is renamed ``*.pem.old``: no source reads it again, and its owner destroys it
once every vehicle has moved past the root that listed it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from keystore.pem import is_encrypted, load_private_key, save_private_key
from keystore.secret import Secret
from storage import read_capped
from uptane.keys import ED25519, MAX_KEY_FILE, PrivateKey, Signer


def role_of(stem: str, role: str) -> bool:
    """Whether a file stem (``ROLE`` or ``ROLE.N``) holds a key of ``role``."""
    return stem == role or (stem.startswith(role + ".") and stem[len(role) + 1 :].isdigit())


def read_key(path: Path, passphrase: Secret | None) -> PrivateKey:
    """One PEM key file; an encrypted one is decrypted with ``passphrase`` (asked for)."""
    data = read_capped(path, MAX_KEY_FILE)
    if not is_encrypted(data):
        return load_private_key(data, None)
    if passphrase is None:
        passphrase = Secret(f"passphrase of {path}")
    return load_private_key(data, passphrase.get())


class FileKeySource:
    """PEM files ``ROLE.pem`` (and ``ROLE.N.pem``) in ``directory``, readable by their owner
    only. With ``passphrase``, new files are encrypted and encrypted files are read with
    it (asked for once)."""

    def __init__(self, directory: Path, passphrase: Secret | None = None) -> None:
        self.directory = Path(directory)
        self.passphrase = passphrase
        #: what reads encrypted files: the configured passphrase, or a prompt made once
        self._reader = passphrase or Secret(f"passphrase of the keys in {self.directory}")
        self._cache: dict[str, list[PrivateKey]] = {}

    def _files(self, role: str) -> list[Path]:
        return [
            p
            for p in sorted(self.directory.glob(f"{role}*.pem"))
            if role_of(p.name[: -len(".pem")], role)
        ]

    def _load(self, path: Path) -> PrivateKey:
        return read_key(path, self._reader)

    def signers(self, role: str) -> list[Signer]:
        if role not in self._cache:
            self._cache[role] = [self._load(p) for p in self._files(role)]
        return list(self._cache[role])

    def describe(self) -> str:
        """Where the keys are, for the service's start-up lines."""
        state = "encrypted" if self.passphrase is not None else "PEM"
        return f"{state} files in {self.directory} (ROLE.pem)"

    def add(self, role: str, key: PrivateKey) -> Path:
        """Store ``key`` as a new key file for ``role`` and return its path."""
        taken = {p.name for p in self.directory.glob(f"{role}*.pem")}
        name, n = f"{role}.pem", 1
        while name in taken:
            name, n = f"{role}.{n}.pem", n + 1
        path = self.directory / name
        secret = self.passphrase.get() if self.passphrase is not None else None
        save_private_key(path, key, secret)
        self._cache.pop(role, None)
        return path

    def generate(self, role: str, scheme: str = ED25519) -> Signer:
        key = PrivateKey.generate(scheme)
        self.add(role, key)
        return key

    def retire(self, role: str, keep: Iterable[str]) -> list[str]:
        """Rename the files of ``role`` whose keys are not in ``keep`` to ``*.pem.old``; the
        first key left is then ``ROLE.pem``."""
        wanted = set(keep)
        gone = []
        for p in self._files(role):
            key = self._load(p)
            if key.keyid not in wanted:
                p.rename(p.with_name(p.name + ".old"))
                gone.append(key.keyid)
        left = self._files(role)
        main = self.directory / f"{role}.pem"
        if left and not main.exists():
            left[0].rename(main)  # the role's first key keeps the plain name
        self._cache.pop(role, None)
        return gone

    def replace(self, role: str, key: PrivateKey) -> Path:
        """Make ``key`` the only key file of ``role`` (old files are kept as ``.old``)."""
        self.retire(role, ())
        return self.add(role, key)

    def forget(self) -> None:
        """Read the files again on the next call (another process changed them)."""
        self._cache.clear()


__all__ = ["FileKeySource", "role_of"]
