"""Figure 1: Image-repository refresh plus one target download, ours against python-tuf.

A static repository of 1,000 targets and two delegated roles (:func:`bench.repos.
image_repository`) is served by ``http.server`` on 127.0.0.1 in its own process. Each run
starts a fresh client from the trusted root (an empty metadata directory holding only
``root.json``), refreshes the top-level metadata, finds a target listed by the second
delegated role and downloads it. Ours is :class:`primary.tuf_client.TufClient`
(:class:`uptane.trust.RepositoryTrust` + :class:`primary.fetcher.Fetcher`, persisting every
file atomically); the reference is python-tuf's ``ngclient.Updater`` doing the same. The
two run alternately; the figure is the ratio of the medians.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.common import Figure, alternate, median, static_server
from bench.repos import image_repository, write_static

NAME = "image_repo_refresh_download"
TITLE = "Image-repo refresh + one target download (1,000 targets, 2 delegated roles)"
GOAL = "ours / python-tuf ≤ 0.8"


def _ours(base: str, root: bytes, work: Path, target: str) -> Callable[[], None]:
    from primary.tuf_client import TufClient

    def run() -> None:
        d = Path(tempfile.mkdtemp(dir=work))
        (d / "root-in.json").write_bytes(root)
        client = TufClient(d / "meta", metadata_url=base + "/metadata/")
        try:
            client.init(d / "root-in.json")
            client.download([target], d / "targets", base + "/targets/")
        finally:
            client.fetcher.close()
        assert (d / "targets").iterdir()
        shutil.rmtree(d)

    return run


def _python_tuf(base: str, root: bytes, work: Path, target: str) -> Callable[[], None]:
    from tuf.ngclient import Updater

    def run() -> None:
        d = Path(tempfile.mkdtemp(dir=work))
        (d / "meta").mkdir()
        up = Updater(
            str(d / "meta"),
            base + "/metadata/",
            str(d / "targets"),
            base + "/targets/",
            bootstrap=root,
        )
        up.refresh()
        info = up.get_targetinfo(target)
        assert info is not None
        (d / "targets").mkdir()
        up.download_target(info)
        shutil.rmtree(d)

    return run


def run(smoke: bool = False) -> list[Figure]:
    n_targets, runs = (30, 2) if smoke else (1000, 15)
    repo = image_repository(n_targets)
    root = repo.builder.trusted_root()
    with tempfile.TemporaryDirectory(prefix="bench-tuf-") as tmp:
        www, work = Path(tmp) / "www", Path(tmp) / "work"
        work.mkdir()
        write_static(repo.builder, repo.blobs, www)
        with static_server(www) as base:
            ours = _ours(base, root, work, repo.download)
            ref = _python_tuf(base, root, work, repo.download)
            t_ours, t_ref = alternate(ours, ref, runs)
            value, reference = median(t_ours), median(t_ref)
            ratio = value / reference
            fig = Figure(
                NAME,
                TITLE,
                GOAL,
                value=value * 1e3,
                reference=reference * 1e3,
                ratio=ratio,
                met=ratio <= 0.8,
                unit="ms (median)",
                reference_unit="ms, python-tuf ngclient (median)",
                notes=(
                    f"{n_targets} targets, 2 delegated roles, {len(repo.blobs[repo.download])}"
                    f"-byte target from the second delegated role; fresh client from the "
                    f"trusted root each run; {runs} alternating runs each, medians."
                ),
                details={
                    "runs": runs,
                    "ours_ms": [round(t * 1e3, 2) for t in t_ours],
                    "python_tuf_ms": [round(t * 1e3, 2) for t in t_ref],
                },
            )
            if not fig.met:
                from bench.common import profile_summary

                fig.details["profile"] = profile_summary(ours, repeat=3)
    return [fig]
