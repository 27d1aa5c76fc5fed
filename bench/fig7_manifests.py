"""Figure 7: Director manifest processing against the ed25519 verify bound.

A real :class:`director.director.Director` (SQLite inventory in a file, as ``uptane-director
init`` creates it) processes signed vehicle version manifests, each carrying three ECU
version reports (the Primary's own and two Secondaries'), through
:meth:`~director.director.Director.process_manifest`: decode, the Primary's signature,
each report's signature, nonce and time checks, and the transaction that stores the
manifest, the nonces and the installed images. The manifests are built beforehand.

Reference: the verify bound, ``1 / (4 × one ed25519 verify)`` manifests per second (one
VVM signature and three report signatures), with the verify measured in this run. Figure:
manifests per second / bound (≥ 0.5).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import Figure, median, profile_summary, time_by_category
from bench.directorkit import make_director
from uptane.metadata import JSON

#: where one manifest's time goes (own time under cProfile)
CATEGORIES = [
    ("signature verify", ("ed25519", "openssl", "rust")),
    ("commit (WAL fsync)", ("method 'commit'",)),
    ("SQLite (sqlite3 driver)", ("sqlite3", "method 'execute'")),
    ("SQLAlchemy Core", ("sqlalchemy",)),
    ("decode + canonical JSON", ("encoding/json.py", "json/decoder.py", "json/__init__.py",
                                 "uptane/manifest.py", "uptane/limits.py")),
    ("keys (parse, key ids)", ("uptane/keys.py", "hashlib")),
]  # fmt: skip
NAME = "director_manifest_processing"
TITLE = "Director manifest processing, VVMs with 3 ECU reports, vs the ed25519 verify bound"
GOAL = "throughput / (1 / (4 × one verify)) ≥ 0.5"


def _verify_cost(repeat: int = 5) -> float:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    payload = b"x" * 400  # about the signed part of one ECU report
    sig = key.sign(payload)
    pub = key.public_key()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(50):
            pub.verify(sig, payload)
        samples.append((time.perf_counter() - t0) / 50)
    return median(samples)


def _statements(d: object, vin: str, data: bytes) -> list[str]:
    """The SQL statements (first word) one manifest runs."""
    import sqlalchemy as sa

    seen: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        seen.append(statement.split(None, 1)[0].upper())

    sa.event.listen(d.engine, "before_cursor_execute", count)  # type: ignore[attr-defined]
    try:
        d.process_manifest(vin, data, JSON)  # type: ignore[attr-defined]
    finally:
        sa.event.remove(d.engine, "before_cursor_execute", count)  # type: ignore[attr-defined]
    return seen


def _without_fsync(ddir: Path, vehicle: object, count: int) -> tuple[float, float]:
    """Attribution only, not what ships: the same manifests on a Director whose SQLite
    connections skip the commit's fsync (``synchronous=NORMAL``). Returns (manifests/s,
    one verify) measured back to back."""
    import sqlalchemy as sa

    from director.director import Director

    d = Director(ddir)
    try:

        @sa.event.listens_for(d.engine, "connect")
        def _normal(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        vvms = [vehicle.manifest(JSON) for _ in range(count)]  # type: ignore[attr-defined]
        one = _verify_cost()
        t0 = time.perf_counter()
        for data in vvms:
            d.process_manifest(vehicle.vin, data, JSON)  # type: ignore[attr-defined]
        rate = count / (time.perf_counter() - t0)
        return rate, median([one, _verify_cost()])
    finally:
        d.dispose()


def run(smoke: bool = False) -> list[Figure]:
    from director.director import Director

    count, rounds = (10, 1) if smoke else (300, 3)
    with tempfile.TemporaryDirectory(prefix="bench-director-") as tmp:
        ddir, (vehicle,) = make_director(Path(tmp))
        d = Director(ddir)
        try:
            rates, costs = [], []
            for _ in range(rounds):
                vvms = [vehicle.manifest(JSON) for _ in range(count)]
                costs.append(_verify_cost())
                t0 = time.perf_counter()
                for data in vvms:
                    d.process_manifest(vehicle.vin, data, JSON)
                rates.append(count / (time.perf_counter() - t0))
                costs.append(_verify_cost())
            value = median(rates)
            one = median(costs)
            bound = 1.0 / (4 * one)
            ratio = value / bound
            fig = Figure(
                NAME,
                TITLE,
                GOAL,
                value=value,
                reference=bound,
                ratio=ratio,
                met=ratio >= 0.5,
                unit="manifests/s (median of rounds)",
                reference_unit="manifests/s = 1 / (4 × one ed25519 verify)",
                notes=(
                    f"{rounds} rounds of {count} JSON VVMs (3 reports each) through "
                    f"Director.process_manifest on SQLite; one verify {one * 1e6:.1f} µs."
                ),
                details={
                    "one_verify_us": round(one * 1e6, 2),
                    "rates": [round(r, 1) for r in rates],
                },
            )
            stmts = _statements(d, vehicle.vin, vehicle.manifest(JSON))
            fig.details["statements_per_manifest"] = len(stmts)
            fig.details["statements"] = stmts
            fig.notes += (
                f" {len(stmts)} SQL statements (BEGIN included) and one fsynced commit each."
            )
            if not fig.met:
                nf_rate, nf_one = _without_fsync(ddir, vehicle, count)
                fig.details["without_commit_fsync"] = {
                    "manifests_per_s": round(nf_rate, 1),
                    "ratio": round(nf_rate * 4 * nf_one, 4),
                    "note": "synchronous=NORMAL, attribution only: not what ships",
                }
                fig.notes += (
                    f" Without the commit's fsync (attribution only, not shipped): "
                    f"{nf_rate:,.0f}/s, ratio {nf_rate * 4 * nf_one:.3g}."
                )
                extra = [vehicle.manifest(JSON) for _ in range(min(count, 100))]

                def again() -> None:
                    for data in extra:
                        d.process_manifest(vehicle.vin, data, JSON)

                fig.details["profile"] = profile_summary(again)
                more = [vehicle.manifest(JSON) for _ in range(min(count, 100))]
                it = iter(more)
                split = time_by_category(
                    lambda: d.process_manifest(vehicle.vin, next(it), JSON),
                    CATEGORIES,
                    repeat=len(more),
                )
                fig.details["ms_per_manifest_by_category"] = split
        finally:
            d.dispose()
    return [fig]
