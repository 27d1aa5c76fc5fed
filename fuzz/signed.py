"""Structure-aware fuzzing of signed content (issue 15).

The byte fuzzers (``fuzz/targets.py``) never get past a signature: a mutated byte breaks
it. These generators start from valid documents built by the real builders, mutate values
*inside* ``signed`` (extreme integers, odd strings and names, wrong types, duplicated and
deleted entries, unknown fields, deep nesting, every field of every role, of reports and
of vehicle manifests), **re-sign them with the right keys** in the encoding chosen (JSON,
the standard DER, compact-der) and feed them to:

- ``signed_metadata``: the core, as a Primary reads a repository: a fresh
  :class:`~uptane.trust.RepositoryTrust` refreshes from a source serving the mutated role
  (root, timestamp, snapshot, targets, a delegated role; Image repository or Director),
  then looks a target up through the delegations;
- ``signed_manifest``: the core, as the Director reads a manifest: decode, §5.3.2.1
  identity and signature checks, freshness;
- ``signed_director``: a Director (SQLite in a temporary directory) through its FastAPI
  app **in-process** (Starlette's TestClient: the real routes, middleware, error handlers
  and group-commit writer, no socket); every answer must be below 500;
- ``signed_secondary``: a real provisioned Secondary agent in-process, through its link
  endpoint in an authenticated session: mutated Director targets (PUT_METADATA), then a
  report; every reply must be a decodable message.

(A whole Primary cycle is fed the same way, test-only, in
``tests/security/test_fuzz_signed_primary.py``, through the test support of
``tests/primary``.)

Every target takes ``bytes``: they seed the choices, so the same registry runs in the
bounded CI run (hypothesis), under atheris (``make fuzz``) and in the plain loop of
:func:`main` (``python -m fuzz.signed --runs 100000``), which also watches time per input
and the process's peak memory. The rule is the one of the byte fuzzers: only the
project's own errors (:class:`~uptane.errors.UptaneError`), no 500, no hang, no unbounded
memory.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import functools
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from uptane.codec import COMPACT_DER, codec_for
from uptane.encoding import der, uptane_der
from uptane.encoding.json import canonical
from uptane.errors import UptaneError
from uptane.keys import ED25519, PrivateKey, Signer
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    check_manifest_against_inventory,
    check_report_freshness,
    decode_vehicle_manifest,
)
from uptane.metadata import DER, JSON, DelegatedRole, TargetFile
from uptane.repository import InMemorySource, RepositoryBuilder, metadata_filename
from uptane.trust import RepositoryTrust

NOW = datetime(2026, 3, 1, tzinfo=UTC)
VIN = "VIN-SIGNED-1"
PRIMARY_ECU, ECU, HW = "pri-1", "ecu-1", "hw-1"
ENCODINGS = (JSON, DER, COMPACT_DER)

# --- what a mutation puts in ---------------------------------------------------------------

INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63)]
INTS += [-(2**63) - 1, 2**71, 10**300, 253402300799, 253402300800]
STRINGS = [
    "",
    ".",
    "..",
    "../x",
    "a/../../x",
    "/etc/passwd",
    "a\\b",
    "a//b",
    "x\x00y",
    "\x1b[31mred",
    "line\nbreak",
    "\u202egpj.exe",
    "a\u2066b\u2069",
    unicodedata.normalize("NFD", "fw/é.bin"),
    "\u0085",
    "\ufeffbom",
    "ab cd",
    "AB",
    "0x12",
    "%2e%2e/x",
    "x" * 300,
    "y" * 5000,
    "😀" * 8,
    "2030-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "sha256",
    "ed25519",
    "targets",
    "root",
]


def hostile(rng: random.Random, depth: int = 0) -> Any:
    """One value a mutation writes: an extreme integer, an odd string, another type."""
    kind = rng.randrange(10)
    if kind < 4:
        return rng.choice(INTS)
    if kind < 8:
        return rng.choice(STRINGS)
    if kind == 8 or depth > 2:
        return rng.choice([None, True, False, [], {}])
    if rng.random() < 0.5:
        return [hostile(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(STRINGS): hostile(rng, depth + 1) for _ in range(rng.randrange(3))}


def _nodes(tree: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) of ``tree``, containers included."""
    out: list[tuple[Any, Any]] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in list(items):
            out.append((node, k))
            if isinstance(v, dict | list) and v:
                todo.append(v)
    return out


def mutate(tree: dict[str, Any], rng: random.Random, rounds: int = 0) -> None:
    """Mutate ``tree`` (a signed part's JSON shape) in place, 1 to 3 times."""
    for _ in range(rounds or rng.randint(1, 3)):
        nodes = _nodes(tree)
        if not nodes:
            return
        node, key = rng.choice(nodes)
        op = rng.randrange(7)
        if op <= 2:  # a value replaced
            node[key] = hostile(rng)
        elif op == 3 and isinstance(node, dict):  # a key renamed (a target name, a role)
            node[rng.choice(STRINGS)] = node.pop(key)
        elif op == 4:  # an entry duplicated, under another name or twice in a list
            if isinstance(node, list):
                node.append(copy.deepcopy(node[key]))
            else:
                node[f"{key}{rng.choice(['', '/', '.', '2', '/../x'])}"] = copy.deepcopy(node[key])
        elif op == 5:  # removed
            del node[key]
        else:  # an unknown field, or deep nesting
            deep: Any = hostile(rng)
            for _ in range(rng.choice([1, 8, 40])):
                deep = [deep] if rng.random() < 0.5 else {"d": deep}
            target = node[key] if isinstance(node[key], dict) else node
            if isinstance(target, dict):
                target[f"x-{rng.randrange(100)}"] = deep
            else:
                target.append(deep)


# --- signing in any encoding ---------------------------------------------------------------


def _payload(signed: dict[str, Any], encoding: str, manifest: bool) -> bytes:
    if encoding == JSON:
        return canonical(signed)
    if encoding == COMPACT_DER:
        return der.encode_manifest_signed(signed) if manifest else der.encode_signed_dict(signed)
    if manifest:
        return uptane_der.manifest_payload(signed)
    return uptane_der._digest(uptane_der.encode_signed_dict(signed))


def resign(
    signed: dict[str, Any], signers: Sequence[Signer], encoding: str, *, manifest: bool = False
) -> bytes:
    """An envelope of ``signed`` (a JSON shape, however hostile) signed by ``signers`` in
    ``encoding``: what a holder of those keys can send. Raises UptaneError when the
    encoding cannot hold a value at all (a DER VisibleString with a non-ASCII name)."""
    codec = codec_for(encoding)
    payload = _payload(signed, encoding, manifest)
    sigs = [
        {
            "keyid": codec.signature_keyid(k.key.keyid),
            "sig": k.sign(payload).hex(),
            **codec.signature_fields(k.key),
        }
        for k in signers
    ]
    doc = {"signed": signed, "signatures": sigs}
    if encoding == JSON:
        return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if encoding == COMPACT_DER:
        return der.encode_manifest(doc) if manifest else der.encode_metadata_dict(doc)
    if manifest:
        return uptane_der.encode_manifest(doc)
    return uptane_der._encode(
        uptane_der.MetadataAsn, lambda: uptane_der._metadata_to_asn(doc), "metadata"
    )


def _signed_or_json(
    signed: dict[str, Any], signers: Sequence[Signer], encoding: str, *, manifest: bool = False
) -> tuple[bytes, str]:
    """:func:`resign` in ``encoding``, or in JSON when that encoding cannot hold the
    mutated value (the DER encoders refuse what they cannot write)."""
    try:
        return resign(signed, signers, encoding, manifest=manifest), encoding
    except (UptaneError, UnicodeError, ValueError, TypeError):
        return resign(signed, signers, JSON, manifest=manifest), JSON


# --- the repositories ----------------------------------------------------------------------


def _keys() -> dict[str, list[PrivateKey]]:
    return {r: [PrivateKey.generate(ED25519)] for r in ("root", "targets", "snapshot", "timestamp")}


@functools.cache
def repos() -> dict[str, RepositoryBuilder]:
    """An Image repository with a chain of 6 delegations and a Director for :data:`VIN`,
    in every encoding, each role's signers kept by the builder."""
    image = RepositoryBuilder("image", _keys(), NOW, encodings=ENCODINGS)  # type: ignore[arg-type]
    image.add_target(TargetFile.from_data("fw/a.bin", b"a" * 40, hardware_ids=[HW]))
    parent = "targets"
    for depth in range(6):
        name = f"level-{depth}"
        image.delegate(
            parent,
            DelegatedRole(name, [], 1, paths=["deep/*"], hardware_ids=[HW]),
            [PrivateKey.generate(ED25519)],
        )
        parent = name
    image.add_target(TargetFile.from_data("deep/x.bin", b"x", release_counter=3), parent)
    image.publish(NOW)
    director = RepositoryBuilder("director", _keys(), NOW, vehicle_id=VIN, encodings=ENCODINGS)  # type: ignore[arg-type]
    director.add_target(
        TargetFile.from_data("fw/a.bin", b"a" * 40, release_counter=2, ecu_ids={ECU: HW})
    )
    director.publish(NOW)
    return {"image": image, "director": director}


def _roles(builder: RepositoryBuilder) -> list[str]:
    return [r for r in builder.files[JSON] if r != "root"] + ["root"]


def _mutated_role(rng: random.Random) -> tuple[str, str, str, bytes, str]:
    """(repository, role, file name the client asks for, bytes, encoding)."""
    name = rng.choice(["image", "director"])
    b = repos()[name]
    role = rng.choice(_roles(b))
    signed = copy.deepcopy(b.role(role).to_dict())
    mutate(signed, rng)
    signers = list(b.signers_of(role))
    data, enc = _signed_or_json(signed, signers, rng.choice(ENCODINGS))  # type: ignore[arg-type]
    if role == "root":
        file = metadata_filename("root", len(b.root_history) + 1, enc)
    elif role == "timestamp":
        file = metadata_filename("timestamp", None, enc)
    else:
        file = metadata_filename(role, b.role(role).version, enc)
    return name, role, file, data, enc


def signed_metadata(data: bytes) -> None:
    """A mutated, re-signed role served to a fresh trust that refreshes and looks up."""
    rng = random.Random(data)
    name, _role, file, raw, enc = _mutated_role(rng)
    b = repos()[name]
    source = InMemorySource(b, enc)
    source.overrides[file] = raw
    kw: dict[str, Any] = {"vehicle_id": VIN, "ecu_ids": [ECU]} if name == "director" else {}
    limits = rng.choice([PRIMARY, CONSTRAINED.replace(role_bytes=PRIMARY.role_bytes)])
    trust = RepositoryTrust(name, b.trusted_root(enc), limits, encoding=enc, **kw)
    trust.refresh(source, NOW + timedelta(hours=1))
    if name == "image":
        trust.find_target("deep/x.bin", source, NOW + timedelta(hours=1), hardware_id=HW)


# --- manifests -----------------------------------------------------------------------------


@functools.cache
def ecu_keys() -> dict[str, PrivateKey]:
    return {PRIMARY_ECU: PrivateKey.generate(ED25519), ECU: PrivateKey.generate(ED25519)}


def _report_shape(serial: str, now: datetime, rng: random.Random) -> dict[str, Any]:
    tf = TargetFile.from_data("fw/a.bin", b"a" * 40, ("sha256",))
    kw: dict[str, Any] = {"nonce": rng.randbytes(16)} if rng.random() < 0.7 else {}
    if not kw:
        kw["counter"] = rng.randrange(1 << 20)
    body = EcuVersionReport(
        serial, InstalledImage.from_target(tf), now, release_counter=2, attack=None, **kw
    )
    return body.to_dict()


def mutated_manifest(rng: random.Random, now: datetime, vin: str = VIN) -> tuple[bytes, str]:
    """A vehicle manifest whose manifest part or one report is mutated, every part
    re-signed by its own key (the ECU's for a report, the Primary's for the whole)."""
    enc = rng.choice(ENCODINGS)
    keys = ecu_keys()
    shapes = {s: _report_shape(s, now, rng) for s in (PRIMARY_ECU, ECU)}
    target = rng.choice([PRIMARY_ECU, ECU, "manifest"])
    if target != "manifest":
        mutate(shapes[target], rng)
    reports = []
    for serial, shape in shapes.items():
        data, _ = _signed_or_json(shape, [keys[serial]], enc, manifest=True)
        if data[:1] == b"{" and enc != JSON:
            return _json_manifest(rng, now, vin, shapes, keys)
        reports.append(json.loads(data) if enc == JSON else _report_doc(data, enc))
    vvm: dict[str, Any] = {
        "_type": "vehicle_version_manifest",
        "vehicle_id": vin,
        "primary_id": PRIMARY_ECU,
        "ecu_version_reports": reports,
    }
    if target == "manifest":
        mutate(vvm, rng)
    return _signed_or_json(vvm, [keys[PRIMARY_ECU]], enc, manifest=True)


def _report_doc(data: bytes, enc: str) -> dict[str, Any]:
    """The JSON shape of a DER report envelope (what the manifest encoder takes)."""
    return codec_for(enc).decode_manifest(data, PRIMARY).to_dict()  # type: ignore[no-any-return]


def _json_manifest(
    rng: random.Random,
    now: datetime,
    vin: str,
    shapes: dict[str, dict[str, Any]],
    keys: dict[str, PrivateKey],
) -> tuple[bytes, str]:
    reports = [json.loads(resign(s, [keys[e]], JSON, manifest=True)) for e, s in shapes.items()]
    vvm = {
        "_type": "vehicle_version_manifest",
        "vehicle_id": vin,
        "primary_id": PRIMARY_ECU,
        "ecu_version_reports": reports,
    }
    return resign(vvm, [keys[PRIMARY_ECU]], JSON, manifest=True), JSON


def signed_manifest(data: bytes) -> None:
    """A mutated, re-signed manifest through what the Director's intake runs in the core."""
    rng = random.Random(data)
    raw, enc = mutated_manifest(rng, NOW)
    manifest = decode_vehicle_manifest(raw, PRIMARY, enc)
    keys = {s: k.key for s, k in ecu_keys().items()}
    _, reports = check_manifest_against_inventory(
        manifest, vehicle_id=VIN, primary_id=PRIMARY_ECU, ecu_keys=keys
    )
    for report in reports.values():
        check_report_freshness(report, set() if report.nonce else 0, NOW, timedelta(hours=1))


# --- the Director, in-process ----------------------------------------------------------------


@functools.cache
def director_client() -> Any:
    """A Director on SQLite in a temporary directory (on /dev/shm where there is one: the
    writer's fsync per batch is then cheap), its FastAPI app in a Starlette TestClient,
    :data:`VIN` registered with :func:`ecu_keys`."""
    from fastapi.testclient import TestClient

    from director.director import Director, EcuSpec
    from director.director_server import create_app
    from director.image_repo import ImageRepository, default_offline_dir

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = Path(tempfile.mkdtemp(prefix="uptane-signed-fuzz-", dir=base))
    atexit.register(shutil.rmtree, tmp, True)
    now = datetime.now(UTC).replace(microsecond=0)
    image = tmp / "image-repo"
    ImageRepository.init(image, default_offline_dir(image), now)
    ImageRepository(image, now, offline_dir=default_offline_dir(image)).sign(now)
    Director.init(
        tmp / "director",
        str(image / "metadata"),
        (image / "metadata" / "1.root.json").read_bytes(),
        db_url=f"sqlite:///{tmp / 'inventory.db'}",
        now=now,
    )
    d = Director(tmp / "director")
    keys = ecu_keys()
    d.register_vehicle(VIN, [EcuSpec(s, HW, k.key, s == PRIMARY_ECU) for s, k in keys.items()])
    client = TestClient(create_app(director=d), raise_server_exceptions=True)
    atexit.register(d.dispose)
    return client


def signed_director(data: bytes) -> None:
    """A mutated, re-signed manifest POSTed to the Director's app: never 500 (an escaped
    exception raises here, through the TestClient)."""
    rng = random.Random(data)
    raw, enc = mutated_manifest(rng, datetime.now(UTC).replace(microsecond=0))
    client = director_client()
    vin = VIN if rng.random() < 0.9 else rng.choice(["VIN%00", "x" * 70, "VIN-NONE"])
    r = client.post(
        f"/vehicles/{vin}/manifest",
        content=raw,
        headers={"Content-Type": codec_for(enc).media_type},
    )
    if r.status_code >= 500:
        raise AssertionError(f"the Director answered {r.status_code}: {r.text[:300]}")


# --- a Secondary agent, in-process ------------------------------------------------------------


@functools.cache
def secondary() -> tuple[Any, Any]:
    """A provisioned partial-verification Secondary trusting :func:`repos`' Director, and
    a Primary end in session with it (fuzz/targets.py does the same for raw PDUs)."""
    from fuzz.targets import _handshake
    from hardware.protocol import PrimaryEndpoint
    from secondary.agent import SecondaryAgent
    from secondary.cli import provision
    from secondary.config import LinkConfig, SecondaryConfig

    tmp = Path(tempfile.mkdtemp(prefix="uptane-signed-fuzz-ecu-"))
    atexit.register(shutil.rmtree, tmp, True)
    provision(
        tmp / "ecu",
        ecu_serial=ECU,
        hardware_id=HW,
        director_root=repos()["director"].trusted_root(DER),
        vehicle_id=VIN,
        slot_size=1 << 16,
        link=LinkConfig(port=""),
        now=NOW.timestamp(),
    )
    agent = SecondaryAgent.from_config(SecondaryConfig.load(tmp / "ecu" / "secondary.toml"))
    agent.start()
    endpoint = agent.endpoint()
    primary = PrimaryEndpoint(PRIMARY, link_key=agent.link_key)
    _handshake(primary, endpoint)
    return endpoint, primary


def _ask(message: Any) -> Any:
    """``message`` to the Secondary in session; its decoded reply (must decode)."""
    from fuzz.targets import _handshake
    from hardware import messages as m

    endpoint, primary = secondary()
    if not endpoint.in_session:
        primary.cancel()
        _handshake(primary, endpoint)
    sealed = endpoint.receive(primary.request(message, 0.0))
    if sealed is None:
        raise AssertionError("the Secondary dropped a request of its session")
    reply = primary.receive(sealed, 0.0)
    if reply is None:
        raise AssertionError("the Primary could not read the Secondary's reply")
    return reply if isinstance(reply, m.Message) else m.decode(reply, PRIMARY)


def signed_secondary(data: bytes) -> None:
    """Mutated Director targets, re-signed by the Director's targets key, sent to the
    Secondary as PUT_METADATA, then a report asked for: every reply decodes."""
    from hardware import messages as m

    rng = random.Random(data)
    b = repos()["director"]
    signed = copy.deepcopy(b.role("targets").to_dict())
    mutate(signed, rng)
    raw, enc = _signed_or_json(
        signed, list(b.signers_of("targets")), rng.choice([DER, COMPACT_DER])
    )  # type: ignore[arg-type]
    _ask(
        m.PutMetadata(
            repository="director", role="targets", encoding=enc, total=len(raw), offset=0, chunk=raw
        )
    )
    _ask(m.GetReport(nonce=rng.randbytes(16)))


# --- the registry and the plain loop ---------------------------------------------------------

#: name -> feed; appended to fuzz/targets.py's registry
FEEDS: dict[str, Callable[[bytes], None]] = {
    "signed_metadata": signed_metadata,
    "signed_manifest": signed_manifest,
    "signed_director": signed_director,
    "signed_secondary": signed_secondary,
}


def seeds() -> list[bytes]:
    """Seeds: any bytes do; a few make the loop start somewhere reproducible."""
    return [i.to_bytes(4, "big") for i in range(8)]


def run(name: str, runs: int, *, start: int = 0, slow: float = 10.0) -> dict[str, Any]:
    """``runs`` inputs (the seeds ``start`` … ``start + runs - 1``) into ``name``: the
    counts, the slowest input, the peak memory, and every finding (an exception other
    than UptaneError, or an input slower than ``slow`` seconds)."""
    feed = FEEDS[name]
    findings: list[str] = []
    refused = 0
    slowest = 0.0
    started = time.monotonic()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(start, start + runs):
        data = i.to_bytes(8, "big")
        t = time.monotonic()
        try:
            feed(data)
        except UptaneError:
            refused += 1
        except Exception as e:  # a finding: record the seed to reproduce it
            findings.append(f"seed {i}: {type(e).__name__}: {str(e)[:300]}")
        took = time.monotonic() - t
        slowest = max(slowest, took)
        if took > slow:
            findings.append(f"seed {i}: {took:.1f} s (a hang)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "runs": runs,
        "refused_with_uptane_error": refused,
        "accepted": runs - refused - len(findings),
        "seconds": round(time.monotonic() - started, 1),
        "slowest_input_s": round(slowest, 3),
        "peak_rss_mb": round(rss / 1024, 1),
        "rss_growth_mb": round((rss - rss0) / 1024, 1),
        "findings": findings,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz.signed", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", default=list(FEEDS), help="targets (default: all)")
    p.add_argument("--runs", type=int, default=int(os.environ.get("FUZZ_SIGNED_RUNS", "100000")))
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--out", default=os.environ.get("FUZZ_OUT", "fuzz/out"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "signed-results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    failed = False
    for name in args.names:
        r = run(name, args.runs, start=args.start)
        results[name] = r
        results_file.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        failed |= bool(r["findings"])
        status = f"{len(r['findings'])} FINDINGS" if r["findings"] else "ok"
        print(f"{name:18} {r['runs']:>8} inputs {r['seconds']:>8}s  {status}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
