"""``uptane-tuf-client`` against a repository that python-tuf signed (interoperability).

The metadata is made with python-tuf's ``tuf.api.metadata`` and securesystemslib signers
and serialised the way python-tuf writes it (indented, not canonical JSON, PEM newlines
escaped), for each key type the protocol names: ed25519, ecdsa-sha2-nistp256 (PEM) and
rsassa-pss-sha256.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from http_servers import Server
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from primary.tuf_client import main
from uptane.paths import encode_name

EXPIRES = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
TOP = ("root", "timestamp", "snapshot", "targets")
GENERATORS: dict[str, Callable[[], CryptoSigner]] = {
    "ed25519": CryptoSigner.generate_ed25519,
    "ecdsa-sha2-nistp256": CryptoSigner.generate_ecdsa,
    "rsassa-pss-sha256": CryptoSigner.generate_rsa,
}


class PythonTufRepo:
    """A consistent-snapshot repository signed by python-tuf, served from ``www``."""

    def __init__(self, www: Path, new_signer: Callable[[], CryptoSigner]) -> None:
        self.www = www
        self.new_signer = new_signer
        self.signers = {r: new_signer() for r in TOP}
        root = Root(expires=EXPIRES)
        for r, s in self.signers.items():
            root.add_key(s.public_key, r)
        self.root: Metadata[Root] = Metadata(root)
        self.targets: Metadata[Targets] = Metadata(Targets(expires=EXPIRES))
        self.snapshot: Metadata[Snapshot] = Metadata(Snapshot(expires=EXPIRES))
        self.timestamp: Metadata[Timestamp] = Metadata(Timestamp(expires=EXPIRES))
        self.delegated: dict[str, tuple[Metadata[Targets], CryptoSigner]] = {}
        self.blobs: dict[str, bytes] = {}
        self.root_versions: list[bytes] = []
        self.sign_root()
        self.publish(bump=False)

    def _bytes(self, md: Metadata) -> bytes:  # type: ignore[type-arg]
        return md.to_bytes(JSONSerializer(compact=False))

    def sign_root(self, *extra: CryptoSigner) -> None:
        self.root.signatures.clear()
        for s in (self.signers["root"], *extra):
            self.root.sign(s, append=True)
        self.root_versions.append(self._bytes(self.root))

    def delegate(self, name: str, paths: list[str]) -> None:
        signer = self.new_signer()
        t = self.targets.signed
        if t.delegations is None:
            t.delegations = Delegations(keys={}, roles={})
        assert t.delegations.roles is not None
        t.delegations.keys[signer.public_key.keyid] = signer.public_key
        t.delegations.roles[name] = DelegatedRole(
            name, [signer.public_key.keyid], 1, False, paths=paths
        )
        self.delegated[name] = (Metadata(Targets(expires=EXPIRES)), signer)

    def add(self, path: str, data: bytes, role: str = "targets") -> None:
        md = self.targets if role == "targets" else self.delegated[role][0]
        md.signed.targets[path] = TargetFile.from_data(path, data, ["sha256"])
        self.blobs[path] = data

    def publish(self, *, bump: bool = True) -> None:
        md_dir = self.www / "metadata"
        md_dir.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(self.root_versions, start=1):
            (md_dir / f"{i}.root.json").write_bytes(data)
        for name, (md, signer) in self.delegated.items():
            if bump:
                md.signed.version += 1
            md.sign(signer, append=False)
            self.snapshot.signed.meta[f"{name}.json"] = MetaFile(md.signed.version)
            (md_dir / f"{md.signed.version}.{encode_name(name)}.json").write_bytes(self._bytes(md))
        if bump:
            self.targets.signed.version += 1
            self.snapshot.signed.version += 1
            self.timestamp.signed.version += 1
        self.targets.sign(self.signers["targets"], append=False)
        self.snapshot.signed.meta["targets.json"] = MetaFile(self.targets.signed.version)
        self.snapshot.sign(self.signers["snapshot"], append=False)
        self.timestamp.signed.snapshot_meta = MetaFile(self.snapshot.signed.version)
        self.timestamp.sign(self.signers["timestamp"], append=False)
        for md in (self.targets, self.snapshot):
            (md_dir / f"{md.signed.version}.{md.signed.type}.json").write_bytes(self._bytes(md))
        (md_dir / "timestamp.json").write_bytes(self._bytes(self.timestamp))
        for path, data in self.blobs.items():
            dirname, sep, name = path.rpartition("/")
            h = TargetFile.from_data(path, data, ["sha256"]).hashes["sha256"]
            f = self.www / "targets" / f"{dirname}{sep}{h}.{name}"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)


def _args(server: Server, mdir: Path, *rest: str) -> list[str]:
    return ["--metadata-url", server.url + "/metadata", "--metadata-dir", str(mdir), *rest]


def _download(server: Server, mdir: Path, tdir: Path, *names: str) -> int:
    argv = _args(server, mdir)
    for n in names:
        argv += ["--target-name", n]
    argv += ["--target-dir", str(tdir), "--target-base-url", server.url + "/targets"]
    return main([*argv, "download"])


def _init(repo: PythonTufRepo, mdir: Path) -> int:
    root_file = mdir.parent / "root-v1.json"
    root_file.write_bytes(repo.root_versions[0])
    return main(["--metadata-dir", str(mdir), "init", str(root_file)])


@pytest.mark.parametrize("scheme", sorted(GENERATORS))
def test_python_tuf_repository_with_each_key_type(
    static_server: Server, tmp_path: Path, scheme: str
) -> None:
    repo = PythonTufRepo(static_server.root, GENERATORS[scheme])  # type: ignore[attr-defined]
    repo.delegate("../x", ["x/*"])
    repo.add("fw/a.bin", b"top-level image")
    repo.add("x/b.bin", b"delegated image", role="../x")
    repo.publish()
    mdir, tdir = tmp_path / "md", tmp_path / "tg"
    assert _init(repo, mdir) == 0
    assert main(_args(static_server, mdir, "refresh")) == 0
    assert _download(static_server, mdir, tdir, "fw/a.bin", "x/b.bin") == 0
    assert (tdir / "fw%2Fa.bin").read_bytes() == b"top-level image"
    assert (tdir / "x%2Fb.bin").read_bytes() == b"delegated image"
    # what the client trusts is byte for byte what python-tuf signed
    md = static_server.root / "metadata"  # type: ignore[attr-defined]
    assert (mdir / "timestamp.json").read_bytes() == (md / "timestamp.json").read_bytes()
    assert (mdir / "targets.json").read_bytes() == (md / "2.targets.json").read_bytes()
    assert (mdir / "..%2Fx.json").read_bytes() == (md / "2...%2Fx.json").read_bytes()


def test_python_tuf_root_rotation(static_server: Server, tmp_path: Path) -> None:
    repo = PythonTufRepo(static_server.root, CryptoSigner.generate_ecdsa)  # type: ignore[attr-defined]
    mdir = tmp_path / "md"
    assert _init(repo, mdir) == 0
    assert main(_args(static_server, mdir, "refresh")) == 0
    old = repo.signers["root"]
    new = CryptoSigner.generate_rsa()
    root = repo.root.signed
    root.revoke_key(old.public_key.keyid, "root")
    root.add_key(new.public_key, "root")
    root.version += 1
    repo.signers["root"] = new
    repo.sign_root(old)  # version 2: signed by the old and the new root keys
    repo.publish()
    assert main(_args(static_server, mdir, "refresh")) == 0
    assert Metadata.from_bytes((mdir / "root.json").read_bytes()).signed.version == 2


# --- TUF client behaviour python-tuf has (issue 13) ------------------------------------------


def _refresh(server: Server, mdir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(_args(server, mdir, "refresh"))
    return code, capsys.readouterr().err


def test_duplicate_keyid_in_signatures_is_malformed(
    static_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = PythonTufRepo(static_server.root, CryptoSigner.generate_ed25519)  # type: ignore[attr-defined]
    mdir = tmp_path / "md"
    assert _init(repo, mdir) == 0
    assert _refresh(static_server, mdir, capsys)[0] == 0
    trusted = (mdir / "timestamp.json").read_bytes()
    repo.publish()
    # python-tuf's serialiser cannot write a repeated key id (signatures are a dict by
    # key id): repeat the one valid signature in the JSON, as a hostile mirror would
    ts_file = static_server.root / "metadata" / "timestamp.json"  # type: ignore[attr-defined]
    doc = json.loads(ts_file.read_bytes())
    doc["signatures"] = doc["signatures"] * 2
    ts_file.write_bytes(json.dumps(doc).encode())
    with pytest.raises(ValueError, match="Multiple signatures"):
        Metadata.from_dict(json.loads(ts_file.read_bytes()))  # what python-tuf says of it
    code, err = _refresh(static_server, mdir, capsys)
    assert code == 1
    assert "MalformedInput" in err and "two signatures name the key id" in err
    assert (mdir / "timestamp.json").read_bytes() == trusted


def test_timestamp_with_the_trusted_version_and_other_content_is_kept(
    static_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = PythonTufRepo(static_server.root, CryptoSigner.generate_ed25519)  # type: ignore[attr-defined]
    repo.add("fw/a.bin", b"one")
    repo.publish()
    mdir = tmp_path / "md"
    assert _init(repo, mdir) == 0
    assert _refresh(static_server, mdir, capsys)[0] == 0
    trusted = (mdir / "timestamp.json").read_bytes()
    # the repository re-signs the timestamp under the same version with another expiry
    repo.timestamp.signed.expires = EXPIRES + timedelta(days=1)
    repo.timestamp.sign(repo.signers["timestamp"], append=False)
    ts_file = static_server.root / "metadata" / "timestamp.json"  # type: ignore[attr-defined]
    ts_file.write_bytes(repo._bytes(repo.timestamp))
    assert ts_file.read_bytes() != trusted
    code, err = _refresh(static_server, mdir, capsys)
    # TUF 5.4.3 / python-tuf: an equal version is no update; the refresh goes on
    assert code == 0, err
    assert "note: timestamp version 2 was served with another signed part" in err
    assert "Attack" not in err
    assert (mdir / "timestamp.json").read_bytes() == trusted
    # the next version is taken as usual
    repo.add("fw/b.bin", b"two")
    repo.publish()
    code, err = _refresh(static_server, mdir, capsys)
    assert code == 0 and err == ""
    assert (mdir / "timestamp.json").read_bytes() == ts_file.read_bytes()


def _fast_forward_targets(repo: PythonTufRepo, version: int) -> None:
    """Publish the top-level targets and the delegated role at ``version`` (a compromised
    targets key and snapshot key can do this), with the next snapshot and timestamp."""
    repo.targets.signed.version = version - 1
    for md, _ in repo.delegated.values():
        md.signed.version = version - 1
    repo.publish()


@pytest.mark.parametrize("rotate", [True, False])
def test_targets_fast_forward_recovery_by_rotating_the_snapshot_key(
    static_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], rotate: bool
) -> None:
    repo = PythonTufRepo(static_server.root, CryptoSigner.generate_ed25519)  # type: ignore[attr-defined]
    repo.delegate("supplier", ["s/*"])
    repo.add("fw/a.bin", b"top")
    repo.add("s/b.bin", b"delegated", role="supplier")
    _fast_forward_targets(repo, 100)
    mdir, tdir = tmp_path / "md", tmp_path / "tg"
    assert _init(repo, mdir) == 0
    assert _download(static_server, mdir, tdir, "fw/a.bin", "s/b.bin") == 0
    capsys.readouterr()
    assert json.loads((mdir / "targets.json").read_bytes())["signed"]["version"] == 100
    assert json.loads((mdir / "supplier.json").read_bytes())["signed"]["version"] == 100
    if rotate:  # the recovery: root version 2 rotates the snapshot key
        old = repo.signers["snapshot"]
        new = CryptoSigner.generate_ed25519()
        root = repo.root.signed
        root.revoke_key(old.public_key.keyid, "snapshot")
        root.add_key(new.public_key, "snapshot")
        root.version += 1
        repo.signers["snapshot"] = new
        repo.sign_root()
    repo.add("fw/c.bin", b"after the recovery")
    _fast_forward_targets(repo, 1)  # targets and the delegated role back to version 1
    code, err = _refresh(static_server, mdir, capsys)
    if not rotate:  # without the root keys, a rollback stays a rollback
        assert code == 1 and "RollbackAttack" in err
        assert json.loads((mdir / "targets.json").read_bytes())["signed"]["version"] == 100
        return
    assert code == 0, err
    assert json.loads((mdir / "targets.json").read_bytes())["signed"]["version"] == 1
    assert not (mdir / "supplier.json").exists()  # held through the dropped snapshot
    assert _download(static_server, mdir, tdir, "fw/c.bin", "s/b.bin") == 0
    assert json.loads((mdir / "supplier.json").read_bytes())["signed"]["version"] == 1
