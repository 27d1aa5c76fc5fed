"""Private keys at rest: PKCS#8 PEM, encrypted with a passphrase through scrypt.

Reading goes through ``cryptography`` (OpenSSL), which decrypts any PKCS#8 PBES2 file.
Writing builds the PBES2 envelope here, because ``cryptography`` (45) encrypts PKCS#8
only with PBKDF2-HMAC-SHA256 at **2,048 iterations** (measured: 0.3 ms to try one
passphrase; ``encryption_builder`` refuses PKCS#8), far under today's guidance. scrypt
(RFC 7914, its PKCS#8 form in §7) with N=2**14, r=8, p=5 is OWASP's scrypt setting at the
16 MiB that OpenSSL's reader accepts (its default memory cap is 32 MiB); one try costs
about 0.2 s here. The primitives (scrypt, AES-256-CBC, PKCS#7 padding) are
``cryptography``'s; only the ASN.1 wrapping (a few ``asn1crypto`` structures) is ours.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from asn1crypto import core
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from storage import atomic_write
from uptane.errors import MalformedInput
from uptane.keys import MAX_KEY_FILE, PrivateKey

#: RFC 7914 §7 and RFC 8018: the object identifiers of the envelope
PBES2 = "1.2.840.113549.1.5.13"
SCRYPT = "1.3.6.1.4.1.11591.4.11"
AES256_CBC = "2.16.840.1.101.3.4.1.42"
#: scrypt cost: N (CPU/memory), r (block size), p (parallelism); see the module docstring
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 5
ENCRYPTED_MARK = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


class _Algorithm(core.Sequence):
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class _ScryptParams(core.Sequence):
    _fields = [
        ("salt", core.OctetString),
        ("cost", core.Integer),
        ("block_size", core.Integer),
        ("parallelization", core.Integer),
        ("key_length", core.Integer, {"optional": True}),
    ]


class _Pbes2Params(core.Sequence):
    _fields = [("kdf", _Algorithm), ("scheme", _Algorithm)]


class _EncryptedPrivateKeyInfo(core.Sequence):
    _fields = [("algorithm", _Algorithm), ("data", core.OctetString)]


def encrypt_pkcs8(key: PrivateKey, passphrase: bytes) -> bytes:
    """``key`` as an encrypted PKCS#8 PEM (PBES2: scrypt, AES-256-CBC)."""
    plain = _pkcs8_der(key)
    salt, iv = os.urandom(16), os.urandom(16)
    kek = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
    data = enc.update(padded) + enc.finalize()
    params = _ScryptParams(
        {"salt": salt, "cost": SCRYPT_N, "block_size": SCRYPT_R, "parallelization": SCRYPT_P}
    )
    pbes2 = _Pbes2Params(
        {
            "kdf": {"algorithm": SCRYPT, "parameters": params},
            "scheme": {"algorithm": AES256_CBC, "parameters": core.OctetString(iv)},
        }
    )
    info = _EncryptedPrivateKeyInfo(
        {"algorithm": {"algorithm": PBES2, "parameters": pbes2}, "data": data}
    )
    b64 = base64.encodebytes(info.dump()).replace(b"\n", b"")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return ENCRYPTED_MARK + b"\n" + b"\n".join(lines) + b"\n-----END ENCRYPTED PRIVATE KEY-----\n"


def is_encrypted(pem: bytes) -> bool:
    return ENCRYPTED_MARK in pem[:200]


def load_private_key(data: bytes, passphrase: bytes | None) -> PrivateKey:
    """A PEM private key, decrypted with ``passphrase`` when it is encrypted."""
    if len(data) > MAX_KEY_FILE:
        raise MalformedInput(f"a key file of more than {MAX_KEY_FILE} bytes")
    if is_encrypted(data) and passphrase is None:
        raise MalformedInput("the key file is encrypted: a passphrase is needed")
    try:
        return PrivateKey.from_pem(data, passphrase if is_encrypted(data) else None)
    except MalformedInput as e:
        if is_encrypted(data):
            raise MalformedInput("cannot decrypt the key file: wrong passphrase?") from e
        raise


def save_private_key(path: Path, key: PrivateKey, passphrase: bytes | None = None) -> None:
    """Write a private key readable by its owner only (encrypted when ``passphrase``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = encrypt_pkcs8(key, passphrase) if passphrase else key.to_pem()
    atomic_write(path, data, mode=0o600)


def _pkcs8_der(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER, only to encrypt it at once."""
    obj = serialization.load_pem_private_key(key.to_pem(), password=None)
    return obj.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


__all__ = ["encrypt_pkcs8", "is_encrypted", "load_private_key", "save_private_key"]
