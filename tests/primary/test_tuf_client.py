"""``uptane-tuf-client`` against a static TUF repository served on 127.0.0.1.

The repository is built with :class:`uptane.repository.RepositoryBuilder` and written the
way a static web server serves it (``metadata/N.role.json``, ``metadata/role.json``,
``targets/[HASH.]name``); the client runs through its ``main(argv)`` entry point (and once
as a real process), so the command-line protocol of issue 4 is what is tested.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from http_servers import Server
from tuf.api.metadata import Metadata as TufMetadata

from primary.tuf_client import main, part_name
from uptane.keys import ECDSA, ED25519, RSA_PSS, PrivateKey
from uptane.metadata import JSON, DelegatedRole, Metadata, TargetFile
from uptane.paths import encode_name
from uptane.repository import RepositoryBuilder

REPO_ROOT = Path(__file__).resolve().parents[2]
#: the client reads the real clock; repositories are signed relative to it
NOW = datetime.now(UTC).replace(microsecond=0)
ROLES = ("root", "targets", "snapshot", "timestamp")


class StaticRepo:
    """A repository built in memory and written under a static server's directory."""

    def __init__(
        self,
        server: Server,
        *,
        consistent: bool = True,
        scheme: str = ED25519,
        now: datetime = NOW,
    ) -> None:
        self.server = server
        self.www: Path = server.root  # type: ignore[attr-defined]
        self.keys = {r: [PrivateKey.generate(scheme)] for r in ROLES}
        self.builder = RepositoryBuilder(
            "image", self.keys, now, consistent_snapshot=consistent, encodings=(JSON,)
        )
        self.consistent = consistent
        self.blobs: dict[str, bytes] = {}
        self.write()

    @property
    def metadata_url(self) -> str:
        return self.server.url + "/metadata/"

    @property
    def targets_url(self) -> str:
        return self.server.url + "/targets/"

    def add(self, path: str, data: bytes, role: str = "targets") -> TargetFile:
        t = TargetFile.from_data(path, data)
        self.builder.add_target(t, role)
        self.blobs[path] = data
        return t

    def publish(self, now: datetime = NOW) -> None:
        self.builder.publish(now)
        self.write()

    def write(self) -> None:
        md = self.www / "metadata"
        md.mkdir(exist_ok=True)
        for key, data in self.builder.versioned_files(JSON).items():
            (md / _encoded_file(key)).write_bytes(data)
        for path, data in self.blobs.items():
            self.target_file(path).parent.mkdir(parents=True, exist_ok=True)
            self.target_file(path).write_bytes(data)

    def target_file(self, path: str) -> Path:
        """Where the server keeps ``path`` (hash-prefixed with consistent snapshots)."""
        dirname, _, name = path.rpartition("/")
        if self.consistent:
            name = f"{TargetFile.from_data(path, self.blobs[path]).hashes['sha256']}.{name}"
        rel = f"{dirname}/{name}" if dirname else name
        return self.www / "targets" / quote(rel, safe="/")

    def meta(self, name: str) -> Path:
        return self.www / "metadata" / name


def _encoded_file(key: str) -> str:
    """``N.role.json``/``role.json`` from versioned_files() -> the name a client requests."""
    stem = key.removesuffix(".json")
    version, dot, role = stem.partition(".")
    if dot and version.isdigit():
        return f"{version}.{encode_name(role)}.json"
    return f"{encode_name(stem)}.json"


@pytest.fixture
def repo(static_server: Server) -> StaticRepo:
    return StaticRepo(static_server)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "client-metadata", tmp_path / "client-targets"


def run_init(repo: StaticRepo, mdir: Path) -> int:
    root_file = mdir.parent / "trusted-root.json"
    root_file.write_bytes(repo.builder.trusted_root(JSON))
    return main(["--metadata-dir", str(mdir), "init", str(root_file)])


def run_refresh(repo: StaticRepo, mdir: Path) -> int:
    return main(["--metadata-url", repo.metadata_url, "--metadata-dir", str(mdir), "refresh"])


def run_download(repo: StaticRepo, mdir: Path, tdir: Path, *names: str) -> int:
    argv = ["--metadata-url", repo.metadata_url, "--metadata-dir", str(mdir)]
    for n in names:
        argv += ["--target-name", n]
    argv += ["--target-dir", str(tdir), "--target-base-url", repo.targets_url, "download"]
    return main(argv)


def trusted_version(mdir: Path, role: str) -> int:
    return TufMetadata.from_bytes((mdir / f"{encode_name(role)}.json").read_bytes()).signed.version


def assert_only_tuf_metadata(mdir: Path) -> None:
    """Every ``*.json`` in the metadata directory is TUF metadata python-tuf can load."""
    for p in mdir.glob("*.json"):
        TufMetadata.from_bytes(p.read_bytes())


# --- init / refresh / download ----------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    [ED25519, ECDSA, RSA_PSS],
)
def test_init_refresh_download_happy_path(static_server: Server, dirs, scheme: str) -> None:
    mdir, tdir = dirs
    repo = StaticRepo(static_server, scheme=scheme)
    repo.add("fw/ecu.bin", b"firmware image " * 100)
    repo.publish()
    assert run_init(repo, mdir) == 0
    assert (mdir / "root.json").read_bytes() == repo.builder.trusted_root(JSON)
    assert static_server.requests == []  # init uses no network
    assert run_refresh(repo, mdir) == 0
    assert sorted(p.name for p in mdir.iterdir()) == [
        "root.json",
        "snapshot.json",
        "targets.json",
        "timestamp.json",
    ]
    assert trusted_version(mdir, "targets") == repo.builder.targets.version
    assert run_download(repo, mdir, tdir, "fw/ecu.bin") == 0
    assert (tdir / "fw%2Fecu.bin").read_bytes() == b"firmware image " * 100
    assert sorted(p.name for p in tdir.iterdir()) == ["fw%2Fecu.bin"]
    assert_only_tuf_metadata(mdir)


def test_init_refuses_what_is_not_a_self_signed_root(repo: StaticRepo, dirs) -> None:
    mdir, _ = dirs
    bad = mdir.parent / "bad-root.json"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(repo.builder.files[JSON]["timestamp"])
    assert main(["--metadata-dir", str(mdir), "init", str(bad)]) == 1
    assert not (mdir / "root.json").exists()
    assert main(["--metadata-dir", str(mdir), "init", str(mdir.parent / "missing.json")]) == 1


def test_refresh_without_init_fails(repo: StaticRepo, dirs) -> None:
    mdir, _ = dirs
    assert run_refresh(repo, mdir) == 1


def test_usage_errors_exit_1(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    assert main(["--metadata-dir", str(mdir), "bogus"]) == 1
    assert main(["--metadata-dir", str(mdir), "init"]) == 1
    assert run_init(repo, mdir) == 0
    assert main(["--metadata-dir", str(mdir), "refresh"]) == 1  # no --metadata-url
    assert run_download(repo, mdir, tdir) == 1  # no --target-name


def test_refresh_follows_new_versions(repo: StaticRepo, dirs) -> None:
    mdir, _ = dirs
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 0
    repo.add("a.bin", b"a")
    repo.publish(NOW + timedelta(minutes=1))
    assert run_refresh(repo, mdir) == 0
    assert trusted_version(mdir, "targets") == 2
    assert trusted_version(mdir, "timestamp") == repo.builder.timestamp.version


def test_download_missing_target_fails(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    repo.add("a.bin", b"a")
    repo.publish()
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "a.bin", "nope.bin") == 1
    assert (tdir / "a.bin").read_bytes() == b"a"  # the ones before the failure are done


def test_download_stops_at_the_first_failure(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    repo.add("a.bin", b"a")
    repo.add("b.bin", b"b")
    repo.publish()
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "nope.bin", "a.bin", "b.bin") == 1
    assert not tdir.exists() or list(tdir.iterdir()) == []


def test_download_persists_its_refresh_even_when_the_target_is_missing(
    repo: StaticRepo, dirs
) -> None:
    mdir, tdir = dirs
    repo.add("a.bin", b"a")
    repo.publish()
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "nope.bin") == 1
    assert trusted_version(mdir, "targets") == repo.builder.targets.version
    assert trusted_version(mdir, "timestamp") == repo.builder.timestamp.version
    assert_only_tuf_metadata(mdir)


def test_unchanged_trusted_files_are_not_rewritten(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    repo.add("a.bin", b"a")
    repo.publish()
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "a.bin") == 0
    before = {p.name: p.stat().st_ino for p in mdir.iterdir()}
    assert run_download(repo, mdir, tdir, "a.bin") == 0
    assert {p.name: p.stat().st_ino for p in mdir.iterdir()} == before  # no temp file left


# --- attacks ----------------------------------------------------------------------------------


def test_4_3_rollback_of_timestamp_is_refused(repo: StaticRepo, dirs) -> None:
    mdir, _ = dirs
    old_ts = repo.meta("timestamp.json").read_bytes()
    repo.add("a.bin", b"a")
    repo.publish(NOW + timedelta(minutes=1))
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 0
    trusted = repo.builder.timestamp.version
    repo.meta("timestamp.json").write_bytes(old_ts)  # a mirror replays version 1
    assert run_refresh(repo, mdir) == 1
    assert trusted_version(mdir, "timestamp") == trusted
    assert_only_tuf_metadata(mdir)


def test_4_3_rollback_of_targets_is_refused(repo: StaticRepo, dirs) -> None:
    """A snapshot naming an older targets version than the trusted one (signed by the
    real snapshot key: a compromised online key) is still refused."""
    mdir, _ = dirs
    repo.add("a.bin", b"a")
    repo.publish(NOW + timedelta(minutes=1))  # targets v2
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 0
    assert trusted_version(mdir, "targets") == 2
    b = repo.builder
    b.targets.version = 0  # re-signed as version 1, and the snapshot lists version 1
    b.mark("targets")
    b.publish(NOW + timedelta(minutes=2))
    repo.write()
    assert b.snapshot.meta["targets.json"].version == 1
    assert run_refresh(repo, mdir) == 1
    assert trusted_version(mdir, "targets") == 2


def test_4_3_freeze_expired_timestamp_is_refused(static_server: Server, dirs) -> None:
    mdir, _ = dirs
    repo = StaticRepo(static_server, now=NOW - timedelta(days=3))  # timestamp: 1 day
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 1
    assert not (mdir / "snapshot.json").exists()
    assert not (mdir / "targets.json").exists()
    assert_only_tuf_metadata(mdir)


def test_4_3_freeze_expired_targets_is_refused(static_server: Server, dirs) -> None:
    mdir, tdir = dirs
    repo = StaticRepo(static_server)
    repo.add("a.bin", b"a")
    repo.builder.expiry["targets"] = timedelta(seconds=-60)  # already expired when signed
    repo.publish()
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 1
    assert run_download(repo, mdir, tdir, "a.bin") == 1
    assert not (tdir / "a.bin").exists()
    assert_only_tuf_metadata(mdir)


def test_4_3_freeze_expired_root_is_refused(static_server: Server, dirs) -> None:
    mdir, _ = dirs
    repo = StaticRepo(static_server, now=NOW - timedelta(days=400))  # root: 365 days
    repo.publish(NOW)  # fresh timestamp/snapshot/targets, but root v1 expired
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 1
    assert sorted(p.name for p in mdir.iterdir()) == ["root.json"]


def test_5_4_3_hash_mismatch_on_an_artifact(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    repo.add("a.bin", b"the real image")
    repo.publish()
    repo.target_file("a.bin").write_bytes(b"the evil image")  # same length, other bytes
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "a.bin") == 1
    assert list(tdir.iterdir()) == []  # nothing installed, no part kept


def test_longer_artifact_is_endless_data(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    repo.add("a.bin", b"short")
    repo.publish()
    repo.target_file("a.bin").write_bytes(b"short" + b"x" * 100_000)
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "a.bin") == 1
    assert list(tdir.iterdir()) == []


def test_shorter_artifact_is_refused_and_nothing_kept(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    repo.add("a.bin", b"the real image")
    repo.publish()
    repo.target_file("a.bin").write_bytes(b"short")
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "a.bin") == 1
    assert list(tdir.iterdir()) == []


def test_substituted_artifact_leaves_the_verified_copy(repo: StaticRepo, dirs) -> None:
    """A repository that swaps the bytes of an already downloaded artifact: the client keeps
    its verified copy (cached, or refused on download) and stores nothing malicious."""
    mdir, tdir = dirs
    repo.add("a.bin", b"good contents")
    repo.add("b.bin", b"good")
    repo.publish()
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "a.bin") == 0
    repo.target_file("a.bin").write_bytes(b"malicious data, longer than the signed length")
    repo.target_file("b.bin").write_bytes(b"malicious data, longer than the signed length")
    assert run_download(repo, mdir, tdir, "a.bin") == 0  # the cached copy still verifies
    assert run_download(repo, mdir, tdir, "b.bin") == 1
    assert {p.name: p.read_bytes() for p in tdir.iterdir()} == {"a.bin": b"good contents"}


def test_tampered_metadata_is_refused(repo: StaticRepo, dirs) -> None:
    mdir, _ = dirs
    assert run_init(repo, mdir) == 0
    ts = repo.meta("timestamp.json")
    ts.write_bytes(ts.read_bytes().replace(b'"version":1', b'"version":9'))
    assert run_refresh(repo, mdir) == 1
    assert not (mdir / "timestamp.json").exists()


# --- key rotation -----------------------------------------------------------------------------


def test_root_key_rotation(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 0
    b = repo.builder
    new_root = PrivateKey.generate()
    b.rotate_keys("root", [new_root], revoke=[repo.keys["root"][0].keyid])
    b.publish(NOW + timedelta(minutes=1))
    new_root2 = PrivateKey.generate()
    b.rotate_keys("root", [new_root2], revoke=[new_root.keyid])
    repo.add("a.bin", b"after rotation")
    b.publish(NOW + timedelta(minutes=2))
    repo.write()
    assert run_download(repo, mdir, tdir, "a.bin") == 0
    assert trusted_version(mdir, "root") == 3
    assert (tdir / "a.bin").read_bytes() == b"after rotation"


def test_timestamp_key_rotation_and_fast_forward_recovery(repo: StaticRepo, dirs) -> None:
    mdir, _ = dirs
    b = repo.builder
    for i in range(5):  # the client trusts a high timestamp version
        b.refresh_timestamp(NOW + timedelta(minutes=i))
    repo.write()
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 0
    high = trusted_version(mdir, "timestamp")
    # the repository rotates the timestamp key and restarts its version at 1
    b.rotate_keys("timestamp", [PrivateKey.generate()], revoke=[repo.keys["timestamp"][0].keyid])
    b.timestamp.version = 0
    b.publish(NOW + timedelta(minutes=10))
    repo.write()
    assert b.timestamp.version < high
    assert run_refresh(repo, mdir) == 0
    assert trusted_version(mdir, "root") == 2
    assert trusted_version(mdir, "timestamp") == b.timestamp.version


def test_root_signed_only_by_new_keys_is_refused(repo: StaticRepo, dirs) -> None:
    mdir, _ = dirs
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 0
    rogue = PrivateKey.generate()
    root = copy.deepcopy(repo.builder.root)
    root.version = 2
    for kid in list(root.roles["root"].keyids):
        root.revoke_key(kid, "root")
    root.add_key(rogue.key, "root")
    md = Metadata(root, encoding=JSON)
    md.sign(rogue)
    repo.meta("2.root.json").write_bytes(md.to_bytes())
    assert run_refresh(repo, mdir) == 1
    assert trusted_version(mdir, "root") == 1


def test_accepted_root_stays_trusted_when_a_later_step_fails(repo: StaticRepo, dirs) -> None:
    mdir, _ = dirs
    assert run_init(repo, mdir) == 0
    b = repo.builder
    b.rotate_keys("root", [PrivateKey.generate()], revoke=[repo.keys["root"][0].keyid])
    b.publish(NOW + timedelta(minutes=1))
    repo.write()
    repo.meta("timestamp.json").write_bytes(b"{}")
    assert run_refresh(repo, mdir) == 1
    assert trusted_version(mdir, "root") == 2


# --- delegations ------------------------------------------------------------------------------


def _delegating_repo(static_server: Server, *, terminating: bool) -> StaticRepo:
    repo = StaticRepo(static_server)
    b = repo.builder
    evil_name, slash_name = PrivateKey.generate(), PrivateKey.generate()
    first, second = PrivateKey.generate(), PrivateKey.generate()
    b.delegate("targets", DelegatedRole("../x", [], 1, paths=["x/*"]), [evil_name])
    b.delegate("targets", DelegatedRole("a/b", [], 1, paths=["ab/*", "ab/*/*"]), [slash_name])
    b.delegate(
        "targets", DelegatedRole("first", [], 1, terminating=terminating, paths=["t/*"]), [first]
    )
    b.delegate("targets", DelegatedRole("second", [], 1, paths=["t/*"]), [second])
    b.delegate("a/b", DelegatedRole("deep", [], 1, paths=["ab/deep/*"]), [PrivateKey.generate()])
    repo.add("x/one.bin", b"one", role="../x")
    repo.add("ab/two.bin", b"two", role="a/b")
    repo.add("ab/deep/three.bin", b"three", role="deep")
    repo.add("t/shadowed.bin", b"from second", role="second")
    repo.add("t/both.bin", b"from first", role="first")
    repo.blobs["t/both.bin"] = b"from first"
    b.add_target(TargetFile.from_data("t/both.bin", b"from second!"), role="second")
    repo.publish()
    return repo


def test_delegations_with_unusual_role_names(static_server: Server, dirs) -> None:
    mdir, tdir = dirs
    repo = _delegating_repo(static_server, terminating=False)
    assert run_init(repo, mdir) == 0
    assert (
        run_download(repo, mdir, tdir, "x/one.bin", "ab/two.bin", "ab/deep/three.bin", "t/both.bin")
        == 0
    )
    assert (tdir / "x%2Fone.bin").read_bytes() == b"one"
    assert (tdir / "ab%2Fdeep%2Fthree.bin").read_bytes() == b"three"
    assert (tdir / "t%2Fboth.bin").read_bytes() == b"from first"  # priority order
    names = sorted(p.name for p in mdir.iterdir())
    assert "..%2Fx.json" in names and "a%2Fb.json" in names and "deep.json" in names
    assert not (mdir.parent / "x.json").exists()  # nothing escaped the directory
    assert list(mdir.parent.glob("*.json")) == [mdir.parent / "trusted-root.json"]
    assert f"/metadata/{repo.builder.role('../x').version}...%2Fx.json" in static_server.requests
    assert_only_tuf_metadata(mdir)


def test_delegations_non_terminating_role_lets_the_search_go_on(
    static_server: Server, dirs
) -> None:
    mdir, tdir = dirs
    open_repo = _delegating_repo(static_server, terminating=False)
    assert run_init(open_repo, mdir) == 0
    assert run_download(open_repo, mdir, tdir, "t/shadowed.bin") == 0


def test_delegations_terminating_role_hides_later_roles(static_server: Server, dirs) -> None:
    mdir, tdir = dirs
    repo = _delegating_repo(static_server, terminating=True)
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "t/shadowed.bin") == 1
    assert not (tdir / "t%2Fshadowed.bin").exists()
    assert run_download(repo, mdir, tdir, "t/both.bin") == 0


def test_delegated_role_persisted_and_reused(static_server: Server, dirs) -> None:
    mdir, tdir = dirs
    repo = _delegating_repo(static_server, terminating=False)
    assert run_init(repo, mdir) == 0
    url = f"/metadata/{repo.builder.role('../x').version}...%2Fx.json"
    assert run_download(repo, mdir, tdir, "x/one.bin") == 0
    assert static_server.count(url) == 1
    (tdir / "x%2Fone.bin").unlink()
    assert run_download(repo, mdir, tdir, "x/one.bin") == 0
    assert static_server.count(url) == 1  # the persisted copy was used


# --- consistent snapshots and caching ---------------------------------------------------------


@pytest.mark.parametrize("consistent", [True, False])
def test_consistent_snapshot_naming(static_server: Server, dirs, consistent: bool) -> None:
    mdir, tdir = dirs
    repo = StaticRepo(static_server, consistent=consistent)
    t = repo.add("dir/fw.bin", b"fw")
    repo.publish()
    if not consistent:  # a repository without consistent snapshots has no versioned files
        for p in (repo.www / "metadata").glob("[0-9]*.json"):
            if not p.name.endswith(".root.json"):
                p.unlink()
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "dir/fw.bin") == 0
    got = [p for p in static_server.requests if not p.endswith(".root.json")]
    h = t.hashes["sha256"]
    if consistent:
        assert got == [
            "/metadata/timestamp.json",
            "/metadata/2.snapshot.json",
            "/metadata/2.targets.json",
            f"/targets/dir/{h}.fw.bin",
        ]
    else:
        assert got == [
            "/metadata/timestamp.json",
            "/metadata/snapshot.json",
            "/metadata/targets.json",
            "/targets/dir/fw.bin",
        ]
    assert (tdir / "dir%2Ffw.bin").read_bytes() == b"fw"


def test_cached_target_is_not_downloaded_again(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    t = repo.add("a.bin", b"cached image")
    repo.publish()
    url = f"/targets/{t.hashes['sha256']}.a.bin"
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "a.bin") == 0
    assert run_download(repo, mdir, tdir, "a.bin") == 0
    assert repo.server.count(url) == 1
    assert repo.server.count("/metadata/2.targets.json") == 1  # unchanged: early stop
    # a corrupted local copy is replaced, under the same name
    (tdir / "a.bin").write_bytes(b"cached imagX")
    assert run_download(repo, mdir, tdir, "a.bin") == 0
    assert repo.server.count(url) == 2
    assert (tdir / "a.bin").read_bytes() == b"cached image"
    assert sorted(p.name for p in tdir.iterdir()) == ["a.bin"]


def test_interrupted_download_leaves_a_part_that_is_resumed(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    data = bytes(range(256)) * 100
    repo.add("big.bin", data)
    repo.publish()
    tdir.mkdir(parents=True)
    (tdir / part_name("big.bin")).write_bytes(data[:10_000])  # left by a power cut
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "big.bin") == 0
    assert (tdir / "big.bin").read_bytes() == data
    assert sorted(p.name for p in tdir.iterdir()) == ["big.bin"]


@pytest.mark.parametrize("role", ["?", "#", "/delegatedrole", "../delegatedrole", "%2F"])
def test_unusual_role_names_are_quoted_on_the_wire_and_on_disk(
    static_server: Server, dirs, role: str
) -> None:
    mdir, tdir = dirs
    repo = StaticRepo(static_server)
    repo.builder.delegate(
        "targets", DelegatedRole(role, [], 1, paths=["*"]), [PrivateKey.generate()]
    )
    repo.publish()
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "nonexistent target") == 1
    version = repo.builder.role(role).version
    assert f"/metadata/{version}.{quote(role, safe='')}.json" in static_server.requests
    assert sorted(p.name for p in mdir.iterdir()) == sorted(
        [
            "root.json",
            "timestamp.json",
            "snapshot.json",
            "targets.json",
            f"{encode_name(role)}.json",
        ]
    )
    # nothing was written beside the metadata directory
    assert sorted(p.name for p in mdir.parent.iterdir()) == [
        "client-metadata",
        "client-targets",
        "trusted-root.json",
        "www",
    ]
    assert_only_tuf_metadata(mdir)


def test_timestamp_with_same_version_and_other_content_is_kept_not_stored(
    repo: StaticRepo, dirs
) -> None:
    mdir, _ = dirs
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 0
    trusted = (mdir / "timestamp.json").read_bytes()
    b = repo.builder
    b.timestamp.snapshot_meta.version = 100  # same version, other content, validly signed
    other = Metadata(copy.deepcopy(b.timestamp), encoding=JSON)
    other.sign(repo.keys["timestamp"][0])
    repo.meta("timestamp.json").write_bytes(other.to_bytes())
    assert run_refresh(repo, mdir) == 0  # no update, no failure: the trusted one is kept
    assert (mdir / "timestamp.json").read_bytes() == trusted


def test_expired_delegated_role_is_refused(static_server: Server, dirs) -> None:
    mdir, tdir = dirs
    repo = StaticRepo(static_server)
    b = repo.builder
    b.delegate("targets", DelegatedRole("old", [], 1, paths=["*"]), [PrivateKey.generate()])
    repo.add("a.bin", b"a", role="old")
    b.expiry["delegated"] = timedelta(seconds=-60)
    repo.publish()
    assert run_init(repo, mdir) == 0
    assert run_refresh(repo, mdir) == 0  # top-level metadata is fine
    assert run_download(repo, mdir, tdir, "a.bin") == 1
    assert list(tdir.iterdir()) == []


# --- as a real process ------------------------------------------------------------------------


def test_console_protocol_in_a_subprocess(repo: StaticRepo, dirs) -> None:
    mdir, tdir = dirs
    repo.add("a.bin", b"via a process")
    repo.publish()
    root_file = mdir.parent / "root.json"
    root_file.parent.mkdir(parents=True, exist_ok=True)
    root_file.write_bytes(repo.builder.trusted_root(JSON))
    cmd = [sys.executable, "-m", "primary.tuf_client", "--metadata-dir", str(mdir)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cmd, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )

    assert run("init", str(root_file)).returncode == 0
    assert run("--metadata-url", repo.metadata_url, "refresh").returncode == 0
    dl = run(
        "--metadata-url",
        repo.metadata_url,
        "--target-name",
        "a.bin",
        "--target-dir",
        str(tdir),
        "--target-base-url",
        repo.targets_url,
        "download",
    )
    assert dl.returncode == 0, dl.stderr
    assert (tdir / "a.bin").read_bytes() == b"via a process"
    bad = run("--metadata-url", repo.server.url + "/nothing/", "refresh")
    assert bad.returncode == 1
    assert "uptane-tuf-client" in bad.stderr


@pytest.mark.skipif(shutil.which("faketime") is None, reason="needs the faketime tool")
def test_clock_is_shifted_by_libfaketime(repo: StaticRepo, dirs) -> None:
    """The client reads time through the standard library, so libfaketime moves it: three
    days on, the one-day timestamp has expired (a freeze the client must refuse)."""
    mdir, _ = dirs
    assert run_init(repo, mdir) == 0
    cmd = [sys.executable, "-m", "primary.tuf_client", "--metadata-dir", str(mdir)]
    cmd += ["--metadata-url", repo.metadata_url, "refresh"]

    def run(*prefix: str) -> int:
        done = subprocess.run(
            [*prefix, *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )
        return done.returncode

    assert run("faketime", "-f", "+3d") == 1
    assert run() == 0
    assert run("faketime", "-f", "+3d") == 1


def test_20_a_second_command_does_not_check_unchanged_files_again(
    repo: StaticRepo, dirs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature checks behind the trusted files are recorded in the user's cache,
    never in the metadata directory; the next command skips exactly those checks."""
    from uptane import trust as trust_mod

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: list[str] = []
    real = trust_mod.verify_signed_by

    def counting(md, keys, keyids, threshold, limits, *, role, repository=None):  # type: ignore[no-untyped-def]
        calls.append(role)
        return real(md, keys, keyids, threshold, limits, role=role, repository=repository)

    monkeypatch.setattr(trust_mod, "verify_signed_by", counting)
    mdir, tdir = dirs
    repo.add("fw/ecu.bin", b"firmware")
    repo.publish()
    assert run_init(repo, mdir) == 0
    assert run_download(repo, mdir, tdir, "fw/ecu.bin") == 0
    assert_only_tuf_metadata(mdir)
    assert list((tmp_path / "cache" / "uptane-tuf-client").iterdir())
    calls.clear()
    assert run_refresh(repo, mdir) == 0  # nothing changed on the server
    assert calls == ["root"]  # the anchor; the timestamp fetched again is the same bytes
    repo.add("fw/other.bin", b"other")
    repo.publish()
    calls.clear()
    assert run_refresh(repo, mdir) == 0
    assert calls == ["root", "timestamp", "snapshot", "targets"]  # new files only
