"""Figure 13: the Image repository adds one image, at 1,000, 10,000 and 100,000 images
(issue 20).

The real repository (:class:`director.image_repo.ImageRepository`, files on disk, ed25519
keys in files, JSON and DER) laid out by the documented policy: the top-level targets
lists the images up to ``BINS_ADVISED`` (1,000), above that they live in
``2**suggest_bits(n)`` hash bins made at ``init --bins`` (10,000: 512 bins; 100,000:
2,048). The images are loaded as metadata in one publish (their bytes are not stored:
nothing here downloads them). Each measured run is what ``uptane-image-repo add-target``
then ``sign`` do in one process: open the repository, store and stage one new image, sign
(its bin with the online key, or the top-level targets with the offline one), snapshot,
timestamp, write the files. Goals: under 1 s and under 64 MiB of memory (tracemalloc peak
of one such run, in its own pass) at every size. The details count the roles re-signed
and the files written: the same at 10,000 and 100,000 images.
"""

from __future__ import annotations

import gc
import random
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.common import Figure, profile_summary, size_label, sizes
from bench.repos import now

NAME = "image_repo_add_target"
TITLE = "Image repository: one image added and published"
GOAL = "≤ 1 s"
NAME_MEM = "image_repo_add_target_memory"
TITLE_MEM = "Image repository: memory to add and publish one image (tracemalloc peak)"
GOAL_MEM = "≤ 64 MiB"
SECONDS, MIB = 1.0, 64.0


def _entries(n: int) -> list[Any]:
    from uptane.metadata import TargetFile

    rng = random.Random(n)
    return [
        TargetFile(
            f"pkg/{i // 100:04d}/part-{i:06d}.bin",
            rng.randrange(1 << 16, 1 << 24),
            {"sha256": rng.randbytes(32).hex(), "sha512": rng.randbytes(64).hex()},
            hardware_ids=[f"hw-{i % 7}"],
            release_counter=rng.randrange(100),
        )
        for i in range(n)
    ]


def build(work: Path, n: int) -> tuple[Path, int | None]:
    """A repository of ``n`` images laid out by the policy; its directory and bin bits."""
    from director import repostate
    from director.image_delegations import BINS_ADVISED, suggest_bits
    from director.image_repo import ImageRepository, default_offline_dir

    d = work / f"repo-{n}"
    bits = suggest_bits(n) if n > BINS_ADVISED else None
    t = now()
    ImageRepository.init(d, default_offline_dir(d), t, bins=bits)
    repo = ImageRepository(d, t, offline_dir=default_offline_dir(d))
    entries = _entries(n)
    if bits is not None:
        repo.sign_into_bins(t, entries)
    else:
        with repo.mutation(t) as b:
            for tf in entries:
                b.add_target(tf)
            b.publish(t)
            repostate.save(b, repo.paths.metadata)
    return d, bits


def add_one(d: Path, i: int) -> dict[str, Any]:
    """Open, stage one image, sign: what ``add-target`` and ``sign`` do."""
    from director import repostate
    from director.image_repo import ImageRepository, default_offline_dir

    written: list[str] = []
    real = repostate.save

    def save(builder: Any, mdir: Path) -> None:
        written.extend(sorted(builder.unsaved))
        real(builder, mdir)

    repostate.save = save  # type: ignore[assignment]
    try:
        t = now()
        repo = ImageRepository(d, t, offline_dir=default_offline_dir(d))
        repo.stage_target(f"new/image-{i:05d}.bin", b"image %05d " % i * 64, ["hw-new"], 1)
        repo.sign_staged(t)
    finally:
        repostate.save = real  # type: ignore[assignment]
    return {"resigned": written, "decoded": len(repo.builder.loaded_roles())}


def measure(work: Path, n: int, runs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    d, bits = build(work, n)
    built = time.perf_counter() - t0
    add_one(d, 0)  # warm: imports, key files
    times = []
    for i in range(1, runs + 1):
        gc.collect()
        t = time.perf_counter()
        info = add_one(d, i)
        times.append(time.perf_counter() - t)
    gc.collect()
    tracemalloc.start()
    add_one(d, runs + 1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    files = sum(1 for _ in (d / "metadata").iterdir())
    return {
        "images": n,
        "bins": None if bits is None else 1 << bits,
        "build_s": round(built, 2),
        "seconds": times,
        "median_s": statistics.median(times),
        "peak_mib": peak / 2**20,
        "roles_resigned_per_add": info["resigned"],
        "roles_decoded_per_add": info["decoded"],
        "metadata_files": files,
        "dir": d,
    }


def _figures(n: int, m: dict[str, Any], runs: int) -> list[Figure]:
    layout = f"{m['bins']:,} hash bins" if m["bins"] else "the top-level targets (no bins)"
    resigned = ", ".join(r for r in m["roles_resigned_per_add"] if not r.startswith("bin-"))
    if any(r.startswith("bin-") for r in m["roles_resigned_per_add"]):
        resigned = "its bin, " + resigned
    notes = (
        f"{n:,} images in {layout}; {runs} adds, median (each: open, stage one 1.3 KB image,"
        f" sign, write; one process, no interpreter start); re-signed per add: {resigned};"
        f" roles decoded per add: {m['roles_decoded_per_add']}; repository built in"
        f" {m['build_s']:.1f} s ({m['metadata_files']:,} metadata files)."
    )
    details = {k: v for k, v in m.items() if k != "dir"}
    details["seconds"] = [round(t, 4) for t in m["seconds"]]
    details["peak_mib"] = round(m["peak_mib"], 2)
    sec = Figure(
        f"{NAME}_{size_label(n)}",
        f"{TITLE} ({n:,} images)",
        GOAL,
        value=m["median_s"],
        reference=SECONDS,
        ratio=m["median_s"] / SECONDS,
        met=m["median_s"] <= SECONDS,
        unit="s per add (median)",
        reference_unit="s (the goal; no peer reference)",
        notes=notes,
        details=details,
        size=n,
        size_unit="images",
        series=NAME,
    )
    mem = Figure(
        f"{NAME_MEM}_{size_label(n)}",
        f"{TITLE_MEM} ({n:,} images)",
        GOAL_MEM,
        value=m["peak_mib"],
        reference=MIB,
        ratio=m["peak_mib"] / MIB,
        met=m["peak_mib"] <= MIB,
        unit="MiB peak",
        reference_unit="MiB (the goal)",
        notes=f"The same add as `{NAME}_{size_label(n)}`, once, under tracemalloc.",
        size=n,
        size_unit="images",
        series=NAME_MEM,
    )
    if not sec.met:
        d = m["dir"]
        sec.details["profile"] = profile_summary(lambda: add_one(d, 10_000))
    return [sec, mem]


def run(smoke: bool = False, quick: bool = False) -> list[Figure]:
    runs = 2 if smoke else 7
    out: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-image-add-") as tmp:
        for n in sizes(smoke, quick, tiny=(40, 1200)):
            m = measure(Path(tmp), n, runs)
            out += _figures(n, m, runs)
    return out
