"""Where signing keys live: key files encrypted at rest, and keys inside PKCS#11 tokens.

- :mod:`keystore.base`: the :class:`KeySource` interface (signers for a role) and
  :class:`KeyStore` (a source that also makes and retires keys, for rotations);
- :mod:`keystore.files`: PEM files, PKCS#8 encrypted with scrypt (:mod:`keystore.pem`);
- :mod:`keystore.hsm`: keys in a PKCS#11 token (python-pkcs11; SoftHSM2 in the tests),
  configured by RFC 7512 URIs (:mod:`keystore.pkcs11uri`);
- :mod:`keystore.sources`: a source from configuration, one signer from ``--key``, and key
  pairs made on their owner's side;
- :mod:`keystore.secret`: passphrases and PINs, from an environment variable or a prompt,
  never from a command line.

The Director's and the Image repository's online keys, the offline keys of ceremonies,
suppliers' keys and ECU keys all come through here. See docs/key-custody.md.
"""

from keystore.base import KeySource, KeyStore, authorized, public_keys
from keystore.files import FileKeySource, read_key
from keystore.hsm import Pkcs11KeySource, TokenError
from keystore.pem import encrypt_pkcs8, save_private_key
from keystore.pkcs11uri import BadUri, Pkcs11Uri, is_uri
from keystore.secret import Secret, SecretUnavailable
from keystore.sources import (
    KeyConfigError,
    check_spec,
    generate_in_token,
    generate_pair,
    open_signer,
    open_source,
    public_key_json,
)

__all__ = [
    "BadUri",
    "FileKeySource",
    "KeyConfigError",
    "KeySource",
    "KeyStore",
    "Pkcs11KeySource",
    "Pkcs11Uri",
    "Secret",
    "SecretUnavailable",
    "TokenError",
    "authorized",
    "check_spec",
    "encrypt_pkcs8",
    "generate_in_token",
    "generate_pair",
    "is_uri",
    "open_signer",
    "open_source",
    "public_key_json",
    "public_keys",
    "read_key",
    "save_private_key",
]
