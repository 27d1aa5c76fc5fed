"""Figure 14: bulk vehicle registration over HTTP, at 1,000, 10,000 and 100,000 vehicles
(issue 20).

The service as users run it (``uptane-director serve``, SQLite inventory, the same
machine), registering fleets of vehicles of two ECUs (a Primary and a brake controller,
ed25519 keys) through ``POST /api/v1/vehicles/bulk``, ``REQUEST`` vehicles per request
(under the default 1 MiB body cap), one request after another, the bodies encoded
beforehand. The clock runs from the first request to the last answer: parsing and checking
every vehicle, looking up VINs already registered, signing each vehicle's first metadata
(JSON; the DER encodings are signed at its first poll, ``director/bulk.py``), and inserting
500 vehicles per transaction. Goal: ≥ 1,000 vehicles a second at every size; the figure
is the rate as a ratio to it.

The details say what the requests did (transactions, the rate of each request) and what
registration left for later: the first poll of a sample of the new vehicles
(``timestamp.der``, signing every encoding) against an unchanged poll of the same ones.
The ECU keys come from a pool of 16 (registration checks each key, whoever holds it; 200,000
key generations would cost the run about 20 s and measure nothing of the Director).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Figure, size_label, sizes

NAME = "bulk_registration"
TITLE = "Director: vehicles registered in bulk over HTTP (uptane-director serve)"
GOAL = "≥ 1,000 vehicles/s"
RATE = 1000.0
#: vehicles per request: about 0.75 MiB of JSON, under the default 1 MiB body cap
REQUEST = 2000
#: vehicles polled for the first time, then again, in the details
SAMPLE = 200


def _keys() -> list[dict[str, Any]]:
    from uptane.keys import PrivateKey

    return [PrivateKey.generate().key.to_dict() for _ in range(16)]


def _bodies(n: int, keys: list[dict[str, Any]]) -> list[bytes]:
    bodies = []
    for start in range(0, n, REQUEST):
        batch = []
        for i in range(start, min(n, start + REQUEST)):
            vin = f"VIN-BULK-{i:07d}"
            batch.append(
                {
                    "vin": vin,
                    "ecus": [
                        {
                            "serial": f"{vin}-tcu",
                            "hardware_id": "tcu-v5",
                            "public_key": keys[i % 16],
                            "primary": True,
                        },
                        {
                            "serial": f"{vin}-brk",
                            "hardware_id": "brk-v1",
                            "public_key": keys[(i + 1) % 16],
                        },
                    ],
                }
            )
        bodies.append(json.dumps(batch).encode())
    return bodies


def _token(ddir: Path) -> str:
    from director import inventory as inv
    from director.common import utcnow
    from director.config import Config
    from director.tokens import Tokens

    cfg = Config.load(ddir / "director.json")
    engine = inv.make_engine(cfg.db_url)
    try:
        return str(Tokens(engine, cfg, utcnow).create("bench", ["keys", "read"])["token"])
    finally:
        engine.dispose()


def measure(work: Path, n: int) -> dict[str, Any]:
    import httpx

    from bench.directorkit import make_director
    from bench.fig7_manifests import server

    ddir, _ = make_director(work, 0)
    token = _token(ddir)
    bodies = _bodies(n, _keys())
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with server(ddir, work / "serve.log") as (port, _pid):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers=headers, timeout=600) as c:
            per_request, transactions = [], 0
            t0 = time.perf_counter()
            for body in bodies:
                t = time.perf_counter()
                r = c.post("/api/v1/vehicles/bulk", content=body)
                per_request.append(time.perf_counter() - t)
                if r.status_code != 201:
                    raise RuntimeError(f"bulk registration answered {r.status_code}: {r.text}")
                transactions += r.json()["transactions"]
            seconds = time.perf_counter() - t0
            sample = [f"VIN-BULK-{i:07d}" for i in range(0, n, max(1, n // SAMPLE))][:SAMPLE]
            first = _polls(c, sample)
            again = _polls(c, sample)
    return {
        "vehicles": n,
        "requests": len(bodies),
        "vehicles_per_request": REQUEST,
        "transactions": transactions,
        "seconds": round(seconds, 3),
        "rate": n / seconds,
        "request_seconds_max": round(max(per_request), 3),
        "first_poll_ms": round(first * 1000, 2),
        "unchanged_poll_ms": round(again * 1000, 2),
        "polled": len(sample),
    }


def _polls(c: Any, vins: list[str]) -> float:
    """Mean seconds of one ``timestamp.der`` poll of each of ``vins``."""
    t = time.perf_counter()
    for vin in vins:
        r = c.get(f"/vehicles/{vin}/metadata/timestamp.der")
        if r.status_code != 200:
            raise RuntimeError(f"poll of {vin} answered {r.status_code}")
    return (time.perf_counter() - t) / len(vins)


def _figure(n: int, m: dict[str, Any]) -> Figure:
    ratio = m["rate"] / RATE
    notes = (
        f"{n:,} vehicles of two ECUs in {m['requests']} request(s) of up to {REQUEST:,}, one"
        f" after another, over HTTP to one `uptane-director serve` (SQLite);"
        f" {m['transactions']} transactions in all. Left for later: a vehicle's first poll"
        f" signs its DER encodings ({m['first_poll_ms']} ms a poll, against"
        f" {m['unchanged_poll_ms']} ms for an unchanged one, {m['polled']} vehicles)."
    )
    return Figure(
        f"{NAME}_{size_label(n)}",
        f"{TITLE} ({n:,} vehicles)",
        GOAL,
        value=m["rate"],
        reference=RATE,
        ratio=ratio,
        met=ratio >= 1.0,
        unit="vehicles/s",
        reference_unit="vehicles/s (the goal; no peer reference)",
        notes=notes,
        details=m,
        size=n,
        size_unit="vehicles",
        series=NAME,
    )


def run(smoke: bool = False, quick: bool = False) -> list[Figure]:
    out = []
    for n in sizes(smoke, quick, tiny=(50, 2500)):
        with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
            out.append(_figure(n, measure(Path(tmp), n)))
    return out
