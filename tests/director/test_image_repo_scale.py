"""The Image repository at scale (issue 20), without timing anything: a change costs what
it touches (its hash bin, snapshot and timestamp), whatever the size of the repository;
the repository never writes a file its own limits refuse, so it can never lock itself
out; a repository that outgrew its top-level targets moves into hash bins in one publish;
a crashed publish's leftover is replaced, not trusted."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from director import image_cli, repostate
from director.image_delegations import suggest_bits
from director.image_repo import ImageRepository, default_offline_dir
from uptane.limits import KiB, Limits
from uptane.metadata import TargetFile, Targets
from uptane.repository import PublishRefused
from uptane.trust import RepositoryTrust

NOW = datetime.now(UTC).replace(microsecond=0)  # the command-line tools read the clock


def _entries(n: int, seed: int = 1) -> list[tuple[str, bytes, list[str], int]]:
    rng = random.Random(seed)
    return [
        (f"pkg/{i // 50:03d}/part-{i:05d}.bin", rng.randbytes(16), ["hw-1"], 1) for i in range(n)
    ]


def _binned(tmp: Path, n: int, bits: int) -> ImageRepository:
    """A repository of ``n`` entries in ``2**bits`` bins, loaded in one publish (their
    images are not stored: nothing here downloads them)."""
    d = tmp / f"repo-{n}"
    ImageRepository.init(d, default_offline_dir(d), NOW, bins=bits)
    repo = ImageRepository(d, NOW, offline_dir=default_offline_dir(d))
    entries = [
        TargetFile.from_data(p, data, ("sha256", "sha512"), hardware_ids=hw, release_counter=c)
        for p, data, hw, c in _entries(n)
    ]
    repo.sign_into_bins(NOW, entries)
    return repo


def _files(mdir: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in mdir.iterdir()}


def _one_change(repo: ImageRepository, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Add one image and sign it; what was re-signed, decoded and (re)written."""
    saved: list[list[str]] = []
    real_save = repostate.save

    def save(builder, mdir):  # type: ignore[no-untyped-def]
        saved.append(sorted(builder.unsaved))
        real_save(builder, mdir)

    monkeypatch.setattr(repostate, "save", save)
    before = _files(repo.paths.metadata)
    fresh = ImageRepository(repo.paths.root, NOW, offline_dir=default_offline_dir(repo.paths.root))
    fresh.stage_target("new/one-more.bin", b"one more image", ["hw-1"], 2)
    fresh.sign_staged(NOW)
    after = _files(repo.paths.metadata)
    the_bin = fresh.bin_for("new/one-more.bin")
    assert the_bin is not None
    monkeypatch.setattr(repostate, "save", real_save)
    return {
        "bin": the_bin,
        "resigned": saved,
        "decoded": sorted(fresh.builder.loaded_roles()),
        "written": sorted(n for n in after if before.get(n) != after[n]),
        "versions": {r: fresh.builder.version_of(r) for r in ("snapshot", the_bin)},
    }


def test_20_one_added_image_resigns_its_bin_snapshot_timestamp_at_every_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    for n in (64, 512, 2048):
        repo = _binned(tmp_path, n, 4)
        change = _one_change(repo, monkeypatch)
        b, snap = change["bin"], change["versions"]["snapshot"]  # type: ignore[index]
        bv = change["versions"][b]  # type: ignore[index]
        assert change["resigned"] == [sorted([b, "snapshot", "timestamp"])], change
        assert change["decoded"] == sorted(["root", "targets", "snapshot", "timestamp", b])
        bin_files = [f"{bv}.{b}.json", f"{bv}.{b}.der", f"{b}.json", f"{b}.der"]
        snap_files = [f"{snap}.snapshot.json", f"{snap}.snapshot.der", "snapshot.json"]
        last = ["snapshot.der", "timestamp.json", "timestamp.der", "current.json"]
        assert change["written"] == sorted([*bin_files, *snap_files, *last]), change
        seen.append((len(change["resigned"][0]), len(change["written"])))  # type: ignore[index]
    assert len(set(seen)) == 1  # the same work at 64, 512 and 2,048 images


def test_20_the_added_image_is_found_by_a_client_and_every_other_bin_is_untouched(
    tmp_path: Path,
) -> None:
    repo = _binned(tmp_path, 300, 4)
    versions = {r: repo.builder.version_of(r) for r in repo.builder.delegated}
    repo.stage_target("new/x.bin", b"x", ["hw-1"], 2)
    repo.sign_staged(NOW)
    fresh = ImageRepository(repo.paths.root, NOW)
    b = fresh.bin_for("new/x.bin")
    changed = {r for r in fresh.builder.delegated if fresh.builder.version_of(r) != versions[r]}
    assert changed == {b}
    trust = RepositoryTrust("image", fresh.builder.trusted_root(), Limits.primary())
    trust.refresh(fresh.builder.source(), NOW)
    assert trust.find_target("new/x.bin", fresh.builder.source(), NOW).length == 1
    assert trust.find_target("pkg/003/part-00150.bin", fresh.builder.source(), NOW).length == 16


def test_20_a_targets_over_its_cap_is_refused_before_it_is_written_and_the_repository_opens(
    tmp_path: Path,
) -> None:
    d = tmp_path / "repo"
    small = Limits.primary().replace(role_bytes={**Limits.primary().role_bytes, "targets": 8 * KiB})
    ImageRepository.init(d, default_offline_dir(d), NOW)
    repo = ImageRepository(d, NOW, offline_dir=default_offline_dir(d), limits=small)
    repo.stage_targets(_entries(10))
    repo.sign_staged(NOW)  # about 3.5 KB: fits
    current = (d / "metadata" / "current.json").read_bytes()
    listing = _files(d / "metadata")
    repo.stage_targets(_entries(40, seed=2))
    with pytest.raises(PublishRefused) as refused:
        repo.sign_staged(NOW)
    text = str(refused.value)
    assert "targets in json" in text and "8,192-byte cap" in text, text
    assert "nothing was published" in text
    assert f"delegate-bins {d} --bits {suggest_bits(50)}" in text, text
    assert (d / "metadata" / "current.json").read_bytes() == current
    assert _files(d / "metadata") == listing  # not one file written
    again = ImageRepository(d, NOW, offline_dir=default_offline_dir(d), limits=small)
    assert len(again.builder.targets.targets) == 10
    assert len(again.staged()) == 40  # kept for after the move into bins


def test_20_too_many_entries_for_the_decoder_is_refused_too(tmp_path: Path) -> None:
    d = tmp_path / "repo"
    few = Limits.primary().replace(max_targets=12)
    ImageRepository.init(d, default_offline_dir(d), NOW)
    repo = ImageRepository(d, NOW, offline_dir=default_offline_dir(d), limits=few)
    repo.stage_targets(_entries(13))
    with pytest.raises(PublishRefused, match="13 items exceeds the cap of 12"):
        repo.sign_staged(NOW)
    assert ImageRepository(d, NOW, limits=few).builder.targets.version == 1


def test_20_delegate_bins_moves_a_grown_top_level_targets_into_bins_in_one_publish(
    tmp_path: Path,
) -> None:
    d = tmp_path / "repo"
    ImageRepository.init(d, default_offline_dir(d), NOW)
    repo = ImageRepository(d, NOW, offline_dir=default_offline_dir(d))
    repo.stage_targets(_entries(120))
    repo.sign_staged(NOW)
    assert image_cli.main(["delegate-bins", str(d), "--bits", "3"]) == 0
    fresh = ImageRepository(d, NOW)
    b = fresh.builder
    assert not b.targets.targets
    listed = {}
    for role in b.delegated:
        model = b.role(role)
        assert isinstance(model, Targets)
        listed.update({p: role for p in model.targets})
    assert len(listed) == 120 and all(fresh.bin_for(p) == r for p, r in listed.items())
    trust = RepositoryTrust("image", b.trusted_root(), Limits.primary())
    trust.refresh(b.source(), NOW)
    assert trust.find_target("pkg/001/part-00077.bin", b.source(), NOW).length == 16


def test_20_init_with_bins_from_the_command_line(tmp_path: Path) -> None:
    d = tmp_path / "repo"
    assert image_cli.main(["init", str(d), "--bins", "2"]) == 0
    cur = json.loads((d / "metadata" / "current.json").read_text())
    assert sorted(cur["delegated"]) == ["bin-0", "bin-1", "bin-2", "bin-3"]
    assert set(cur["expires"]) >= {"targets", "snapshot", "timestamp", "bin-0"}


def test_20_a_leftover_of_a_crashed_publish_is_replaced_not_served(tmp_path: Path) -> None:
    d = tmp_path / "repo"
    ImageRepository.init(d, default_offline_dir(d), NOW)
    repo = ImageRepository(d, NOW, offline_dir=default_offline_dir(d))
    nxt = repo.builder.snapshot.version + 1
    (d / "metadata" / f"{nxt}.snapshot.json").write_bytes(b"left by a crash")
    repo.stage_target("a/b.bin", b"image", ["hw-1"], 1)
    repo.sign_staged(NOW)
    fresh = ImageRepository(d, NOW)
    assert fresh.builder.snapshot.version == nxt
    assert (d / "metadata" / f"{nxt}.snapshot.json").read_bytes() == fresh.builder.files["json"][
        "snapshot"
    ]


def test_20_suggested_bits_grow_with_the_repository() -> None:
    assert [suggest_bits(n) for n in (1, 1_000, 10_000, 100_000, 10**7)] == [4, 8, 9, 11, 14]


def test_20_the_oem_chooses_the_hash_set_each_image_lists(tmp_path: Path) -> None:
    d = tmp_path / "repo"
    assert image_cli.main(["init", str(d), "--hashes", "sha256"]) == 0
    repo = ImageRepository(d, NOW, offline_dir=default_offline_dir(d))
    tf = repo.stage_target("a/b.bin", b"image", ["hw-1"], 1)
    assert list(tf.hashes) == ["sha256"]
    assert json.loads((d / "repo.json").read_text())["hashes"] == ["sha256"]
    default = tmp_path / "default"
    assert image_cli.main(["init", str(default)]) == 0
    tf = ImageRepository(default, NOW).stage_target("a/b.bin", b"image", ["hw-1"], 1)
    assert list(tf.hashes) == ["sha256", "sha512"]
    assert image_cli.main(["init", str(tmp_path / "bad"), "--hashes", "md5"]) == 2
