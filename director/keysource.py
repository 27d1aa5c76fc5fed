"""Where the Director's and the Image repository's signing keys come from: a thin
re-export of :mod:`keystore` (key files encrypted at rest, PKCS#11 tokens), kept so that
``director.keysource`` keeps working for callers that import it.

Online keys (snapshot, timestamp, the Director's targets, hash bins) are read by servers
through a key source configured in ``director.json`` or the Image repository's
``repo.json``. Offline keys (roots, the Image repository's targets) are held by their
owners, in their own directories or tokens, and sign in ceremonies (docs/key-custody.md).
"""

from __future__ import annotations

from keystore import FileKeySource, KeySource, KeyStore, save_private_key
from uptane.keys import ED25519, PrivateKey


def generate(scheme: str = ED25519) -> PrivateKey:
    """A fresh private key, in memory."""
    return PrivateKey.generate(scheme)


__all__ = ["FileKeySource", "KeySource", "KeyStore", "generate", "save_private_key"]
