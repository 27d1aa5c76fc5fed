"""Figure 1: Image-repository refresh plus one target download, ours against python-tuf.

A static repository of 1,000 targets and two delegated roles (``bench.repos.
image_repository``) is served by ``http.server`` on 127.0.0.1 in its own process. Each
run starts a fresh client from the trusted root (``root.json`` for ours, ``bootstrap``
bytes for python-tuf, which writes it), refreshes the top-level metadata, finds a target
listed by the second delegated role and downloads it.

Ours is :class:`primary.tuf_client.TufClient` (:class:`uptane.trust.RepositoryTrust` and
:class:`primary.fetcher.Fetcher`, persisting every file atomically); the reference is
python-tuf's ``ngclient.Updater`` doing the same. The two run alternately; only the
client's work is timed (creating and removing its directories is not); the figure is
the ratio of the medians.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    alternate,
    median,
    profile_summary,
    static_server,
    time_by_category,
)
from bench.repos import image_repository, write_static

#: where a client's time goes, by the code that spends it (own time under cProfile)
CATEGORIES = [
    ("canonical JSON encode", ("encoding/json.py:_encode", "encoding/json.py:_escape",
                               "encoding/json.py:canonical", "formats.py:", "json/encoder.py")),
    ("JSON decode + bounds", ("json/decoder.py", "json/__init__.py", "encoding/json.py",
                              "<built-in method _json", "limits.py")),
    ("metadata model", ("uptane/metadata.py", "tuf/api/", "uptane/trust.py",
                        "uptane/verify.py", "uptane/signatures.py", "uptane/keys.py",
                        "securesystemslib")),
    ("signature verify", ("ed25519", "openssl")),
    ("disk (write, fsync, rename)", ("posix.fsync", "posix.write", "posix.open", "posix.replace",
                                     "posix.rename", "tempfile.py", "shutil.py", "pathlib.py",
                                     "posix.unlink", "posix.mkdir", "posix.rmdir", "_io.open",
                                     "tuf_client.py:atomic_write", "tuf_client.py:_replace_synced",
                                     "_io.BufferedWriter")),
    ("HTTP", ("urllib3", "http/client.py", "socket", "ssl.py", "email/", "fetcher.py")),
]  # fmt: skip
NAME = "image_repo_refresh_download"
TITLE = "Image-repo refresh + one target download (1,000 targets, 2 delegated roles)"
GOAL = "ours / python-tuf ≤ 0.8"


def _ours(base: str, root: bytes, work: Path, target: str) -> Callable[[], None]:
    from primary.tuf_client import TufClient

    def run() -> float:
        d = Path(tempfile.mkdtemp(dir=work))
        (d / "root-in.json").write_bytes(root)
        t0 = time.perf_counter()
        client = TufClient(d / "meta", metadata_url=base + "/metadata/")
        try:
            client.init(d / "root-in.json")
            client.download([target], d / "targets", base + "/targets/")
        finally:
            client.fetcher.close()
        elapsed = time.perf_counter() - t0
        assert any((d / "targets").iterdir())
        shutil.rmtree(d)
        return elapsed

    return run


def _python_tuf(base: str, root: bytes, work: Path, target: str) -> Callable[[], None]:
    from tuf.ngclient import Updater

    def run() -> float:
        d = Path(tempfile.mkdtemp(dir=work))
        (d / "meta").mkdir()
        (d / "targets").mkdir()
        t0 = time.perf_counter()
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
        up.download_target(info)
        elapsed = time.perf_counter() - t0
        shutil.rmtree(d)
        return elapsed

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
                fig.details["profile"] = profile_summary(ours, repeat=3)
                fig.details["ms_by_category_ours"] = time_by_category(ours, CATEGORIES)
                fig.details["ms_by_category_python_tuf"] = time_by_category(ref, CATEGORIES)
                fig.details.update(_without_fsync(ours, ref, max(3, runs // 2)))
    return [fig]


def _without_fsync(ours: Callable[[], Any], ref: Callable[[], Any], runs: int) -> dict[str, Any]:
    """Attribution only, never the figure: the same alternation with ``os.fsync`` made a
    no-op for our client (python-tuf calls none), to show what durability costs here."""
    real = os.fsync
    calls = 0

    def counting(fd: int) -> None:
        nonlocal calls
        calls += 1

    def ours_no_fsync() -> Any:
        os.fsync = counting  # type: ignore[assignment]
        try:
            return ours()
        finally:
            os.fsync = real

    t_ours, t_ref = alternate(ours_no_fsync, ref, runs)
    return {
        "fsyncs_per_run_ours": calls // (runs + 1),
        "ratio_without_fsync": round(median(t_ours) / median(t_ref), 4),
    }
