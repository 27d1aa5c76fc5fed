"""Key files at rest (issue 16): PKCS#8 encrypted with scrypt, passphrases from an
environment variable or a prompt, never from a command line."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from asn1crypto import core

from keystore import (
    FileKeySource,
    KeyConfigError,
    Secret,
    SecretUnavailable,
    check_spec,
    encrypt_pkcs8,
    generate_pair,
    open_signer,
    open_source,
)
from keystore.pem import PBES2, SCRYPT, load_private_key
from uptane.errors import MalformedInput
from uptane.keys import ECDSA, ED25519, RSA_PSS, Key, PrivateKey
from uptane.limits import Limits

ENV = "KEYS_TEST_PASSPHRASE"


def _oids(pem: bytes) -> list[str]:
    import base64

    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    info = core.Sequence.load(base64.b64decode(body))
    alg = info[0]
    params = alg[1]
    return [alg[0].dotted, params[0][0].dotted]


@pytest.mark.parametrize("scheme", [ED25519, ECDSA, RSA_PSS])
def test_encrypted_pkcs8_uses_pbes2_scrypt_and_round_trips(scheme: str) -> None:
    key = PrivateKey.generate(scheme)
    pem = encrypt_pkcs8(key, b"correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert _oids(pem) == [PBES2, SCRYPT]
    assert load_private_key(pem, b"correct horse").keyid == key.keyid
    with pytest.raises(MalformedInput, match="wrong passphrase"):
        load_private_key(pem, b"wrong")
    with pytest.raises(MalformedInput, match="passphrase is needed"):
        load_private_key(pem, None)


def test_openssl_reads_the_encrypted_file(tmp_path: Path) -> None:
    """The envelope is standard PKCS#8: OpenSSL's own command line opens it."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command on this machine")
    key = PrivateKey.generate()
    (tmp_path / "k.pem").write_bytes(encrypt_pkcs8(key, b"s3cret"))
    out = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "k.pem"), "-passin", "pass:s3cret", "-pubout"],
        capture_output=True,
        check=True,
    ).stdout
    assert Key.from_bytes(out, Limits.primary()).keyid == key.keyid


def test_file_source_encrypts_new_keys_with_the_configured_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "online pass")
    src = open_source(
        {"kind": "files", "directory": "keys", "passphrase_env": ENV}, tmp_path, "online-keys"
    )
    assert isinstance(src, FileKeySource)
    made = src.generate("timestamp", ED25519)
    path = tmp_path / "keys" / "timestamp.pem"
    data = path.read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = open_source(
        {"kind": "files", "directory": "keys", "passphrase_env": ENV}, tmp_path, "online-keys"
    )
    assert [s.key.keyid for s in again.signers("timestamp")] == [made.key.keyid]
    assert "encrypted" in again.describe()
    monkeypatch.setenv(ENV, "not it")
    stale = open_source(
        {"kind": "files", "directory": "keys", "passphrase_env": ENV}, tmp_path, "online-keys"
    )
    with pytest.raises(MalformedInput, match="wrong passphrase"):
        stale.signers("timestamp")


def test_no_passphrase_and_no_terminal_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(SecretUnavailable, match=f"set the environment variable {ENV}"):
        Secret("passphrase", ENV).get()
    key = PrivateKey.generate()
    (tmp_path / "k.pem").write_bytes(encrypt_pkcs8(key, b"pw"))
    with pytest.raises(SecretUnavailable, match="run the command on a terminal"):
        open_signer(str(tmp_path / "k.pem"))
    monkeypatch.setenv(ENV, "pw")
    assert open_signer(str(tmp_path / "k.pem"), passphrase_env=ENV).key.keyid == key.keyid


def test_the_prompt_is_used_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty())
    monkeypatch.setattr("getpass.getpass", lambda prompt: "typed")
    assert Secret("passphrase of x").get() == b"typed"


def test_unencrypted_files_keep_working_and_retire_renames(tmp_path: Path) -> None:
    src = FileKeySource(tmp_path)
    a = src.generate("snapshot")
    b = src.generate("snapshot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.1.pem", "snapshot.pem"]
    assert {s.key.keyid for s in src.signers("snapshot")} == {a.key.keyid, b.key.keyid}
    assert src.retire("snapshot", [b.key.keyid]) == [a.key.keyid]
    assert [s.key.keyid for s in src.signers("snapshot")] == [b.key.keyid]
    assert (tmp_path / "snapshot.pem.old").exists()
    assert sorted(p.name for p in tmp_path.glob("*.pem")) == ["snapshot.pem"]  # renamed
    assert src.describe().startswith("PEM files")


def test_key_pair_made_on_the_owner_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "supplier pass")
    pub, pub_path = generate_pair(tmp_path / "acme.pem", ECDSA, Secret("p", ENV))
    assert pub_path.name == "acme.pub.json"
    assert b"PRIVATE" not in pub_path.read_bytes()
    assert Key.from_bytes(pub_path.read_bytes(), Limits.primary()) == pub
    assert open_signer(str(tmp_path / "acme.pem"), passphrase_env=ENV).key == pub
    with pytest.raises(FileExistsError):
        generate_pair(tmp_path / "acme.pem")


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "vault"},
        {"kind": "files", "passphrase": "in the config"},
        {"kind": "files", "directory": 3},
        {"kind": "pkcs11", "uri": "file:/x"},
        {"kind": "pkcs11", "uri": "pkcs11:tokn=x"},
    ],
)
def test_bad_key_source_settings_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(KeyConfigError):
        check_spec(spec)
