"""The parts of ``uptane-image-repo`` and ``uptane-director`` that key holders use, the
same in both: making a key pair on the holder's side (``keygen``), and signing and
checking a pending file (``ceremony sign``, ``ceremony status``). Secrets come from an
environment variable named on the command line, or a prompt; never from the line itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from director.ceremony import Pending, summary
from keystore import Secret, generate_in_token, generate_pair, is_uri, open_signer
from uptane.keys import MAX_KEY_FILE, SCHEMES, Key, PrivateKey
from uptane.limits import Limits


def load_public_key(text: str) -> Key:
    """A public key file (TUF JSON or PEM), or the public half of a PEM private key."""
    with open(text, "rb") as f:
        data = f.read(MAX_KEY_FILE + 1)
    if b"PRIVATE KEY" in data[:MAX_KEY_FILE]:
        if b"ENCRYPTED" in data[:100]:
            raise ValueError(f"{text} is an encrypted private key: give its .pub.json file")
        return PrivateKey.from_pem(data).key
    return Key.from_bytes(data, Limits.primary())


def parse_role_keys(items: list[str] | None) -> dict[str, list[Key]]:
    """``ROLE:KEYFILE`` (repeatable) -> keys by role."""
    out: dict[str, list[Key]] = {}
    for item in items or []:
        role, sep, path = item.partition(":")
        if not sep:
            raise ValueError(f"bad {item!r}: use ROLE:KEYFILE")
        out.setdefault(role, []).append(load_public_key(path))
    return out


def parse_role_values(items: list[str] | None, kind: type) -> dict[str, Any]:
    """``ROLE:VALUE`` (repeatable) -> values by role (key ids, thresholds)."""
    out: dict[str, Any] = {}
    for item in items or []:
        role, sep, value = item.partition(":")
        if not sep:
            raise ValueError(f"bad {item!r}: use ROLE:VALUE")
        if kind is int:
            out[role] = int(value)
        else:
            out.setdefault(role, []).append(value)
    return out


def cmd_keygen(args: argparse.Namespace) -> int:
    """A key pair made on the holder's side: a file (encrypted when a passphrase variable
    is named) or a key inside a token; prints the public key file to send."""
    if is_uri(args.out):
        key = generate_in_token(args.out, args.scheme, pin_env=args.pin_env)
        pub = Path(args.public or f"{key.keyid[:16]}.pub.json")
        from keystore import public_key_json
        from storage import atomic_write

        atomic_write(pub, public_key_json(key), mode=0o644)
    else:
        secret = Secret("passphrase for the new key", args.passphrase_env)
        if args.passphrase_env is None and not args.unencrypted:
            secret = Secret("passphrase for the new key (it encrypts the file)")
        key, pub = generate_pair(Path(args.out), args.scheme, None if args.unencrypted else secret)
    print(f"made {key.scheme} key {key.keyid}")
    print(f"public key: {pub} (send this one; the private key stays where it is)")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    pending = Pending.load(Path(args.pending))
    signer = open_signer(args.key, passphrase_env=args.passphrase_env, pin_env=args.pin_env)
    for line in summary(pending.model()):
        print(line)
    pending.sign(signer, args.name or Path(args.key.split(";")[-1]).stem)
    pending.save(Path(args.pending))
    print(f"signed with {signer.key.keyid[:16]}")
    for line in pending.status_lines():
        print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    pending = Pending.load(Path(args.pending))
    for line in summary(pending.model()):
        print(line)
    for line in pending.status_lines():
        print(line)
    return 0 if not any(r.missing for r in pending.requirements()) else 3


def add_keygen_parser(sub: Any) -> None:
    sp = sub.add_parser(
        "keygen", help="make a key pair on the holder's side (supplier, ceremony signer)"
    )
    sp.add_argument("out", help="private key file to write (PEM), or a PKCS#11 URI with object=")
    sp.add_argument("--scheme", choices=SCHEMES, default="ed25519")
    sp.add_argument("--passphrase-env", help="variable holding the passphrase (else a prompt)")
    sp.add_argument("--unencrypted", action="store_true", help="write the key unencrypted")
    sp.add_argument("--pin-env", help="variable holding the token PIN (else a prompt)")
    sp.add_argument("--public", help="where to write the public key of a token key")
    sp.set_defaults(func=cmd_keygen)


def add_signer_parsers(ceremony: Any) -> None:
    """``ceremony sign`` and ``ceremony status`` (the repository-specific ``start`` and
    ``publish`` are added by each command)."""
    sp = ceremony.add_parser("sign", help="add your signature to a pending file")
    sp.add_argument("pending", help="the pending file")
    sp.add_argument("--key", required=True, help="your private key file, or a PKCS#11 URI")
    sp.add_argument("--name", help="how status names you (default: the key file's name)")
    sp.add_argument("--passphrase-env", help="variable holding the key file's passphrase")
    sp.add_argument("--pin-env", help="variable holding the token PIN")
    sp.set_defaults(func=cmd_sign)
    sp = ceremony.add_parser("status", help="who signed a pending file and what is missing")
    sp.add_argument("pending")
    sp.set_defaults(func=cmd_status)


__all__ = [
    "add_keygen_parser",
    "add_signer_parsers",
    "load_public_key",
    "parse_role_keys",
    "parse_role_values",
]
