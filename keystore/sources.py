"""Key sources from configuration, and one signer from a command line's ``--key``.

A key source is configured by a small mapping (in ``director.json``, or the Image
repository's ``repo.json``)::

    {"kind": "files", "directory": "online-keys", "passphrase_env": "IMAGE_KEYS_PASSPHRASE"}
    {"kind": "pkcs11", "uri": "pkcs11:token=image-online", "pin_env": "IMAGE_HSM_PIN"}

A ``--key`` names a PEM file (its passphrase from ``--passphrase-env NAME`` or a prompt)
or a PKCS#11 URI naming one object (its PIN from the URI's ``pin-source``, ``--pin-env
NAME`` or a prompt). Secrets never come from the command line itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from keystore.base import KeyStore
from keystore.files import FileKeySource, read_key
from keystore.hsm import Pkcs11KeySource
from keystore.pem import save_private_key
from keystore.pkcs11uri import BadUri, Pkcs11Uri, is_uri
from keystore.secret import Secret
from storage import atomic_write
from uptane.keys import ED25519, Key, PrivateKey, Signer

KINDS = ("files", "pkcs11")
#: a public key file is public: any vehicle or OEM may read it
PUBLIC_MODE = 0o644


class KeyConfigError(ValueError):
    """A key source setting that cannot work; the message says which and why."""


def _str(spec: dict[str, Any], name: str) -> str | None:
    value = spec.get(name)
    if value is not None and not isinstance(value, str):
        raise KeyConfigError(f"key source: {name} must be a string")
    return value


def check_spec(spec: Any) -> dict[str, Any]:
    """A key source setting, checked (unknown names refused: a typo must not fall back to
    unencrypted files)."""
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise KeyConfigError(f"key source: kind must be one of {KINDS}")
    known = {
        "files": {"kind", "directory", "passphrase_env"},
        "pkcs11": {"kind", "uri", "pin_env", "module"},
    }[spec["kind"]]
    extra = set(spec) - known
    if extra:
        raise KeyConfigError(f"key source: unknown setting(s) {sorted(extra)}")
    for name in known - {"kind"}:
        _str(spec, name)
    if spec["kind"] == "pkcs11":
        try:
            Pkcs11Uri.parse(_str(spec, "uri") or "")
        except BadUri as e:
            raise KeyConfigError(f"key source: {e}") from None
    return dict(spec)


def open_source(spec: dict[str, Any] | None, base: Path, default_dir: str) -> KeyStore:
    """The key source ``spec`` configures; None means unencrypted files in
    ``base/default_dir`` (the layout before key sources were configurable)."""
    if spec is None:
        return FileKeySource(base / default_dir)
    spec = check_spec(spec)
    if spec["kind"] == "files":
        env = spec.get("passphrase_env")
        directory = base / (spec.get("directory") or default_dir)
        secret = Secret(f"passphrase of the keys in {directory}", env) if env else None
        return FileKeySource(directory, secret)
    pin = Secret(f"PIN of {spec['uri'].split('?')[0]}", spec.get("pin_env"))
    return Pkcs11KeySource(spec["uri"], pin=pin, module=spec.get("module"))


def open_signer(
    text: str, *, passphrase_env: str | None = None, pin_env: str | None = None
) -> Signer:
    """The one key ``text`` names: a PEM file (encrypted or not) or a PKCS#11 URI with an
    ``object``."""
    if is_uri(text):
        uri = Pkcs11Uri.parse(text)
        if uri.object is None:
            raise KeyConfigError("the PKCS#11 URI must name the key: add ;object=LABEL")
        src = Pkcs11KeySource(text, pin=Secret(f"PIN of token {uri.token!r}", pin_env))
        found = src.signers(uri.object)
        if len(found) != 1:
            raise KeyConfigError(f"{len(found)} private keys labelled {uri.object!r} on the token")
        return found[0]
    path = Path(text)
    return read_key(path, Secret(f"passphrase of {path}", passphrase_env))


def public_key_json(key: Key) -> bytes:
    """A public key file: TUF JSON, what ``delegate --key`` and ceremonies read."""
    return json.dumps(key.to_dict(), indent=2, sort_keys=True).encode("utf-8") + b"\n"


def generate_pair(
    private_path: Path, scheme: str = ED25519, passphrase: Secret | None = None
) -> tuple[Key, Path]:
    """A new key pair on the owner's side: the private key at ``private_path`` (mode 0600,
    encrypted when ``passphrase``), the public key beside it as ``NAME.pub.json``."""
    private_path = Path(private_path)
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists: pick another name")
    key = PrivateKey.generate(scheme)
    save_private_key(private_path, key, passphrase.get() if passphrase else None)
    pub = private_path.with_name(private_path.name.removesuffix(".pem") + ".pub.json")
    atomic_write(pub, public_key_json(key.key), mode=PUBLIC_MODE)
    return key.key, pub


def generate_in_token(uri: str, scheme: str = ED25519, pin_env: str | None = None) -> Key:
    """A new key pair made inside the token (its ``object`` label); the public key."""
    parsed = Pkcs11Uri.parse(uri)
    if parsed.object is None:
        raise KeyConfigError("name the new key: add ;object=LABEL to the PKCS#11 URI")
    token = Pkcs11Uri({k: v for k, v in parsed.path.items() if k != "object"}, dict(parsed.query))
    src = Pkcs11KeySource(token, pin=Secret(f"PIN of token {parsed.token!r}", pin_env))
    if src.signers(parsed.object):
        raise KeyConfigError(f"the token already holds a key labelled {parsed.object!r}")
    return src.token.generate(parsed.object, scheme).key


def spec_from_options(
    token: str | None, pin_env: str | None, passphrase_env: str | None
) -> dict[str, str] | None:
    """The online key source an ``init`` command's options ask: a PKCS#11 token (its PIN
    from ``pin_env``), key files encrypted with the passphrase in ``passphrase_env``, or
    None (plain key files)."""
    if token:
        spec = {"kind": "pkcs11", "uri": token}
        if pin_env:
            spec["pin_env"] = pin_env
        return spec
    if passphrase_env:
        return {"kind": "files", "passphrase_env": passphrase_env}
    return None


__all__ = [
    "KeyConfigError",
    "check_spec",
    "generate_in_token",
    "generate_pair",
    "open_signer",
    "open_source",
    "public_key_json",
    "spec_from_options",
]
