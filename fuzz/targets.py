"""Every decoder of untrusted bytes in the stack, as fuzz targets (issue 7).

Each :class:`Target` takes one ``bytes`` input and must either return or raise an
:class:`uptane.errors.UptaneError`; anything else escaping is a finding. The same registry
drives the bounded hypothesis run in CI (``tests/security/test_fuzz_decoders.py``) and
the coverage-guided atheris harnesses (``fuzz/run.py``, ``make fuzz``).

``seeds()`` gives valid encodings built with the real builders (RepositoryBuilder, the
manifest builder, the link message and frame encoders), so mutations start from inputs
that reach deep into each decoder.

This module imports only the stack (no hypothesis, no atheris); building the seeds
generates a few keys and a provisioned Secondary in a temporary directory, once.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hardware import messages as m
from hardware.protocol import PrimaryEndpoint
from hardware.secure_link import (
    ClientChannel,
    Incoming,
    LinkKey,
    ServerChannel,
    decode_pdu,
    is_envelope,
    refusal,
)
from hardware.serial_link import (
    KIND_ACK,
    KIND_DATA,
    MAX_FRAME,
    Frame,
    FrameCodec,
    cobs_decode,
    cobs_encode,
    decode_frame,
    encode_frame,
)
from uptane import roughtime
from uptane.codec import COMPACT_DER, COMPACT_DER_CODEC, DER_CODEC
from uptane.encoding import cbor
from uptane.errors import UptaneError
from uptane.keys import ECDSA, ED25519, PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    build_vehicle_manifest,
    decode_report,
    decode_vehicle_manifest,
)
from uptane.metadata import DER, JSON, DelegatedRole, MapFile, TargetFile, decode
from uptane.partial import PartialVerifier
from uptane.repository import RepositoryBuilder
from uptane.trust import RepositoryTrust

NOW = datetime(2026, 3, 1, tzinfo=UTC)
VIN = "VIN-FUZZ-0001"
ECU = "ecu-fuzz-1"
HW = "hw-fuzz"


@dataclass(frozen=True)
class Target:
    """One decoder: ``run(data)`` feeds it; ``seeds`` are valid inputs to mutate.
    ``never_raises``: the decoder must not raise at all (it reports errors in-band)."""

    name: str
    run: Callable[[bytes], Any]
    seeds: Callable[[], list[bytes]]
    never_raises: bool = False


# --- valid inputs -----------------------------------------------------------------------------


@functools.cache
def _repos() -> dict[str, RepositoryBuilder]:
    def keys(scheme: str = ED25519) -> dict[str, list[Any]]:
        return {r: [PrivateKey.generate(scheme)] for r in ("root", "targets", "snapshot")} | {
            "timestamp": [PrivateKey.generate()]
        }

    image = RepositoryBuilder("image", keys(ECDSA), NOW, encodings=(JSON, DER, COMPACT_DER))  # type: ignore[arg-type]
    image.add_target(
        TargetFile.from_data("fw/a.bin", b"a" * 40, ("sha256", "sha512"), hardware_ids=[HW])
    )
    image.delegate(
        "targets",
        DelegatedRole("supplier", [], 1, paths=["sup/*"], hardware_ids=[HW]),
        [PrivateKey.generate()],
    )
    image.add_target(TargetFile.from_data("sup/x.bin", b"x", release_counter=3), "supplier")
    image.publish(NOW)
    director = RepositoryBuilder(
        "director", keys(), NOW, vehicle_id=VIN, encodings=(JSON, DER, COMPACT_DER)
    )  # type: ignore[arg-type]
    director.add_target(
        TargetFile.from_data(
            "fw/a.bin", b"a" * 40, ("sha256",), release_counter=2, ecu_ids={ECU: HW}
        )
    )
    director.publish(NOW)
    return {"image": image, "director": director}


def _metadata(encoding: str) -> list[bytes]:
    out = []
    for b in _repos().values():
        out += list(b.files[encoding].values())
        out += [h[encoding] for h in b.root_history]
    return out


@functools.cache
def _manifests() -> dict[str, list[bytes]]:
    primary, brake = PrivateKey.generate(ED25519), PrivateKey.generate(ECDSA)
    out: dict[str, list[bytes]] = {}
    for enc in (JSON, DER, COMPACT_DER):
        tf = TargetFile.from_data("fw/a.bin", b"a" * 40, ("sha256", "sha512"))
        reports = []
        for ecu, key, kw in (
            ("primary-1", primary, {"nonce": b"\x01" * 16, "release_counter": 2}),
            (ECU, brake, {"counter": 9, "attack": "rollback: counter 1 < 2"}),
        ):
            r = SignedManifest(
                EcuVersionReport(ecu, InstalledImage.from_target(tf), NOW, **kw), encoding=enc
            )
            r.sign(key)
            reports.append(r)
        vvm = build_vehicle_manifest(VIN, "primary-1", reports, primary, encoding=enc)
        out[f"report_{enc}"] = [r.to_bytes(enc) for r in reports]
        out[f"vvm_{enc}"] = [vvm.to_bytes(enc)]
    return out


MESSAGES: list[m.Message] = [
    m.Hello(min_version=1, max_version=1, max_frame=1024, max_message=65536),
    m.HelloInfo(
        version=1,
        ecu_serial=ECU,
        hardware_id=HW,
        mode="partial",
        max_frame=512,
        max_message=8192,
        slot_size=1 << 16,
    ),
    m.GetReport(nonce=b"\x01" * 16),
    m.Report(report=b"signed report bytes"),
    m.PutTime(time=1_790_000_000),
    m.PutMetadata(
        repository="director", role="targets", encoding="der", total=10, offset=4, chunk=b"abc"
    ),
    m.PutImage(filename="fw/a.bin", total=40, offset=0, chunk=b"a" * 40),
    m.Install(filename="fw/a.bin"),
    m.GetStatus(),
    m.Status(state="receiving", image_filename="fw/a.bin", image_total=40, image_offset=8),
    m.Ack(offset=7),
    m.Error(code=30, attack="rollback", message="version 3 < 4"),
]


def _link_messages() -> list[bytes]:
    return [m.encode(msg, i + 1) for i, msg in enumerate(MESSAGES)]


def _frame_bodies() -> list[bytes]:
    frames = [Frame(KIND_DATA, 7, i, p, 0) for i, p in enumerate(_link_messages())]
    frames += [Frame(KIND_ACK, 7, 3), Frame(KIND_DATA, 1, 2, b"x" * 300, 1)]
    return [encode_frame(f)[1:-1] for f in frames]


def _frame_streams() -> list[bytes]:
    bodies = _frame_bodies()
    return [b"\x00" + b"\x00".join(bodies[i : i + 3]) + b"\x00" for i in range(0, len(bodies), 3)]


# --- the Secondary's link endpoint (what ISO-TP and serial deliver) ----------------------------


@functools.cache
def _secondary_endpoint() -> Any:
    """A real provisioned Secondary agent (file-backed flash in a temp dir, its link key)
    and its endpoint, with a Primary end in session after a HELLO, so fuzzed PDUs reach
    the handlers (sealed in that session) as well as the envelope (as they come)."""
    from secondary.agent import SecondaryAgent
    from secondary.cli import provision
    from secondary.config import LinkConfig, SecondaryConfig

    tmp = Path(tempfile.mkdtemp(prefix="uptane-fuzz-"))
    atexit.register(shutil.rmtree, tmp, True)
    director = _repos()["director"]
    provision(
        tmp / "ecu",
        ecu_serial=ECU,
        hardware_id=HW,
        director_root=director.trusted_root(DER),
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


def _handshake(primary: PrimaryEndpoint, endpoint: Any) -> None:
    reply = endpoint.receive(primary.request(primary.hello(), 0.0))
    assert reply is not None and primary.receive(reply, 0.0) is not None


def _secondary_pdu(data: bytes) -> None:
    """One PDU into the Secondary endpoint, as it comes and sealed in the Primary's
    session: it must never raise; what it answers must be readable (a plain ERROR for a
    message outside the envelope, a REFUSAL, or, in the session, a reply the Primary's end
    opens and decodes)."""
    endpoint, primary = _secondary_endpoint()
    _readable(endpoint.receive(data), data)
    sealed = endpoint.receive(primary.channel.seal(data))
    if sealed is None:
        raise AssertionError(f"a request sealed in the session was dropped: {data[:120]!r}")
    opened = primary.channel.open(sealed, PRIMARY.link_message_bytes)
    if opened is None:
        raise AssertionError(f"the Primary cannot open the reply to {data[:120]!r}")
    _decodable(opened[1], data)
    if not endpoint.in_session:  # keep the session so later inputs reach the handlers
        primary.cancel()
        _handshake(primary, endpoint)


def _readable(reply: bytes | None, data: bytes) -> None:
    if reply is None:
        return  # dropped by the envelope
    if is_envelope(reply):
        _decodable(decode_pdu(reply, PRIMARY.link_message_bytes).payload, data)
    else:
        _decodable(reply, data)


def _decodable(payload: bytes, data: bytes) -> None:
    try:
        m.decode(payload, PRIMARY)
    except UptaneError as e:  # the Primary could not read the Secondary's answer
        raise AssertionError(f"undecodable reply {payload[:120]!r} to {data[:120]!r}: {e}") from e


def _secondary_seeds() -> list[bytes]:
    director = _repos()["director"]
    targets = director.files[DER]["targets"]
    return [
        *_link_messages(),
        *_envelopes(),
        m.encode(
            m.PutMetadata(
                repository="director",
                role="targets",
                encoding="der",
                total=len(targets),
                offset=0,
                chunk=targets[:1000],
            ),
            77,
        ),
    ]


# --- the link's envelope (hardware.secure_link): fixed keys and nonces, so that seeds are
# PDUs of the very session each run sets up ----------------------------------------------

_LINK_KEY = LinkKey(bytes(range(16)))


def _link_session() -> tuple[PrimaryEndpoint, ServerChannel, Incoming]:
    """A Primary end with a GET_STATUS (request id 2) outstanding in a session opened with
    the fixed link key and nonces, and the Secondary's end of that session."""
    pri = PrimaryEndpoint(PRIMARY, first_rid=0)
    pri.channel = ClientChannel(_LINK_KEY, random=lambda n: b"\x11" * n)
    sc = ServerChannel(_LINK_KEY, random=lambda n: b"\x22" * n)
    hello = sc.open(decode_pdu(pri.request(pri.hello(), 0.0), PRIMARY.link_message_bytes))
    assert isinstance(hello, Incoming)
    info = MESSAGES[1]
    assert isinstance(info, m.HelloInfo)
    welcome = m.HelloInfo(**{**info.__dict__, "version": m.MAX_VERSION})
    assert pri.receive(sc.seal(hello, m.encode(welcome, 1)), 0.0) is not None
    pri.request(m.GetStatus(), 0.0)
    return pri, sc, Incoming(hello.session, b"")


def _primary_pdu(data: bytes) -> None:
    """A reply PDU arriving at the Primary's endpoint while a request is outstanding, in
    an authenticated session."""
    pri, _, _ = _link_session()
    pri.receive(data, 0.0)


def _primary_seeds() -> list[bytes]:
    _, sc, session = _link_session()
    sealed = [sc.seal(session, m.encode(msg, 2)) for msg in MESSAGES]
    plain = m.encode(m.Error.from_exception(UptaneError("x")), 2)
    return [*sealed, refusal(plain), *(m.encode(msg, 1) for msg in MESSAGES)]


def _envelopes() -> list[bytes]:
    """One PDU of each kind: a HELLO, a WELCOME, requests and replies, a REFUSAL."""
    pri, sc, session = _link_session()
    out = [pri.channel.seal(m.encode(msg, 3)) for msg in MESSAGES[2:6]]
    out += [sc.seal(session, m.encode(msg, 2)) for msg in MESSAGES[6:9]]
    fresh = PrimaryEndpoint(PRIMARY, link_key=_LINK_KEY)
    out.append(fresh.request(fresh.hello(), 0.0))
    out.append(refusal(m.encode(m.Error.from_exception(UptaneError("x")), 4)))
    return out


def _link_envelope(data: bytes) -> None:
    """An envelope read at both ends: split, then opened by a keyed Secondary (which may
    open a session for a HELLO) and by a keyed Primary in session."""
    pdu = decode_pdu(data, PRIMARY.link_message_bytes)
    _, sc, _ = _link_session()
    sc.open(pdu)
    pri, _, _ = _link_session()
    pri.channel.open(data, PRIMARY.link_message_bytes)


# --- the decoders ------------------------------------------------------------------------------


def _trust_update(data: bytes) -> None:
    image = _repos()["image"]
    for enc in (JSON, DER):
        t = RepositoryTrust("image", image.trusted_root(enc), PRIMARY, encoding=enc)
        with contextlib.suppress(UptaneError):
            t.update_root(data)
        with contextlib.suppress(UptaneError):
            t.update_timestamp(data, NOW)


def _partial(data: bytes) -> None:
    director = _repos()["director"]
    pv = PartialVerifier(director.trusted_root(DER), ECU, HW, CONSTRAINED, encoding=DER)
    with contextlib.suppress(UptaneError):
        pv.verify(data, NOW)
    pv.update_roots([data], NOW)


def _frame_stream(data: bytes) -> None:
    codec = FrameCodec(MAX_FRAME)
    codec.feed(data)
    assert len(codec._buf) <= codec.max_encoded


# --- secure time: Roughtime responses, requests and the token a Primary forwards --------------

_TIME_NONCE = bytes(range(32))
_ECU_NONCE = b"ecu-fuzz-nonce-1"


@functools.cache
def _time_server() -> tuple[Any, Any, bytes, roughtime.TimeServerKey]:
    """Fixed keys, so an input a long run finds reproduces in another process."""
    long_term = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    online = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
    ts = int(NOW.timestamp())
    cert = roughtime.make_certificate(long_term, roughtime.public_bytes(online), ts - 86400, ts)
    return (
        long_term,
        online,
        cert,
        roughtime.TimeServerKey("fuzz", roughtime.public_bytes(long_term)),
    )


def _time_responses(nonce: bytes, batch: int = 3, at: int = 1) -> list[bytes]:
    _, online, cert, _ = _time_server()
    nonces = [bytes([i]) * 32 for i in range(batch)]
    nonces[at] = nonce
    ts = int(NOW.timestamp())
    return roughtime.sign_batch(nonces, midpoint=ts, radius=3, certificate=cert, online_key=online)


def _roughtime_seeds() -> list[bytes]:
    return [
        _time_responses(_TIME_NONCE, 1, 0)[0],
        _time_responses(_TIME_NONCE, 3, 1)[1],
        _time_responses(_TIME_NONCE, 8, 5)[5],
    ]


def _roughtime_response(data: bytes) -> None:
    roughtime.verify_response(data, _TIME_NONCE, [_time_server()[3]], roughtime.PRIMARY_LIMITS)


def _time_token_seeds() -> list[bytes]:
    commitment = roughtime.commit_nonces([b"other-ecu-nonce!", _ECU_NONCE, b"third-ecu-nonce!"])
    one = _time_responses(commitment.nonce, 2, 0)[0]
    return [
        commitment.token(1, [one]).to_bytes(),
        commitment.token(1, [one, _time_responses(commitment.nonce, 4, 3)[3]]).to_bytes(),
    ]


def _time_token(data: bytes) -> None:
    roughtime.accept_token(
        data,
        _ECU_NONCE,
        [_time_server()[3]],
        roughtime.TimePolicy(),
        int(NOW.timestamp()) - 3600,
        roughtime.CONSTRAINED_LIMITS,
    )


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            "metadata_json", lambda d: decode(d, PRIMARY, encoding=JSON), lambda: _metadata(JSON)
        ),
        Target("metadata_der", lambda d: decode(d, PRIMARY, encoding=DER), lambda: _metadata(DER)),
        Target(
            "metadata_der_constrained",
            lambda d: decode(d, CONSTRAINED, encoding=DER, role_type="targets"),
            lambda: _metadata(DER),
        ),
        Target(
            "map_file",
            lambda d: MapFile.from_json(d, PRIMARY),
            lambda: [MapFile.default("https://d", "https://i").to_json()],
        ),
        Target(
            "report_json",
            lambda d: decode_report(d, PRIMARY, JSON),
            lambda: _manifests()["report_json"],
        ),
        Target(
            "report_der",
            lambda d: decode_report(d, PRIMARY, DER),
            lambda: _manifests()["report_der"],
        ),
        Target(
            "vvm_json",
            lambda d: decode_vehicle_manifest(d, PRIMARY, JSON),
            lambda: _manifests()["vvm_json"],
        ),
        Target(
            "vvm_der",
            lambda d: decode_vehicle_manifest(d, PRIMARY, DER),
            lambda: _manifests()["vvm_der"],
        ),
        Target(
            "manifest_der_any_kind",
            lambda d: DER_CODEC.decode_manifest(d, PRIMARY),
            lambda: _manifests()["vvm_der"] + _manifests()["report_der"],
        ),
        Target(
            "metadata_compact_der",
            lambda d: decode(d, PRIMARY, encoding=COMPACT_DER),
            lambda: _metadata(COMPACT_DER),
        ),
        Target(
            "manifest_compact_der_any_kind",
            lambda d: COMPACT_DER_CODEC.decode_manifest(d, PRIMARY),
            lambda: _manifests()["vvm_compact-der"] + _manifests()["report_compact-der"],
        ),
        Target("cbor", lambda d: cbor.loads(d, CONSTRAINED), _link_messages),
        Target("link_message", lambda d: m.decode(d, CONSTRAINED), _link_messages),
        Target("cobs", cobs_decode, lambda: [cobs_encode(b) for b in _link_messages()]),
        Target("serial_frame", lambda d: decode_frame(d, MAX_FRAME), _frame_bodies),
        Target("serial_stream", _frame_stream, _frame_streams, never_raises=True),
        Target("pdu_at_secondary", _secondary_pdu, _secondary_seeds, never_raises=True),
        Target("pdu_at_primary", _primary_pdu, _primary_seeds),
        Target("link_envelope", _link_envelope, _envelopes),
        Target("trust_root_timestamp", _trust_update, lambda: _metadata(JSON) + _metadata(DER)),
        Target("partial_verification", _partial, lambda: _metadata(DER)),
        Target("roughtime_response", _roughtime_response, _roughtime_seeds),
        Target(
            "roughtime_request",
            lambda d: roughtime.parse_request(d, roughtime.PRIMARY_LIMITS),
            lambda: [
                roughtime.build_request(_TIME_NONCE),
                roughtime.build_request(_TIME_NONCE, server_key=_time_server()[3].public_key),
            ],
        ),
        Target("time_token", _time_token, _time_token_seeds),
    ]
}


def check_one(target: Target, data: bytes) -> None:
    """Run ``target`` on ``data``; re-raise anything that is not allowed to escape."""
    if target.never_raises:
        target.run(data)
        return
    with contextlib.suppress(UptaneError):
        target.run(data)


# --- encrypted images and deltas (issue 17): what a Secondary decodes from the link ---------

#: a fixed content key: the fuzzer is the man in the middle, who never has it
_CONTENT_KEY = b"\x07" * 32
_PLAIN = bytes(range(256)) * 3 + b"tail"


@functools.cache
def _delta_pair() -> tuple[bytes, bytes]:
    base = bytes(range(256)) * 12
    new = bytearray(base)
    new[100:140] = b"changed bytes in the middle of the image"
    new[2000:2000] = b"inserted"
    return base, bytes(new)


def _encrypted_seeds() -> list[bytes]:
    from uptane.encryption import Encryptor

    enc = Encryptor(len(_PLAIN), chunk_size=256, content_key=_CONTENT_KEY)
    return [enc.update(_PLAIN) + enc.finish()]


def _decrypt(data: bytes) -> None:
    from uptane.encryption import Decryptor

    dec = Decryptor(_CONTENT_KEY, len(_PLAIN), CONSTRAINED)
    dec.feed(data, lambda _: None)
    dec.finish()


def _delta_seeds() -> list[bytes]:
    from uptane.delta import create_delta

    base, new = _delta_pair()
    return [create_delta(base, new), create_delta(new, base[:500])]


def _apply_delta(data: bytes) -> None:
    from uptane.delta import DeltaApplier

    base, new = _delta_pair()
    out = bytearray()
    applier = DeltaApplier(
        lambda off, n: base[off : off + n],
        len(base),
        out.extend,
        patch_length=len(data),
        output_length=len(new),
        limits=CONSTRAINED,
    )
    applier.feed(data)
    applier.finish()
    assert len(out) <= len(new)


def _encryption_key_seeds() -> list[bytes]:
    from uptane.encryption import EncryptionPrivateKey

    return [EncryptionPrivateKey.generate().public_key().to_der()]


def _encryption_key(data: bytes) -> None:
    from uptane.encryption import EncryptionPublicKey

    EncryptionPublicKey.from_der(data)


TARGETS.update(
    {
        t.name: t
        for t in [
            Target("encrypted_image", _decrypt, _encrypted_seeds),
            Target("delta_patch", _apply_delta, _delta_seeds),
            Target("encryption_key_der", _encryption_key, _encryption_key_seeds),
        ]
    }
)


# --- signed content, mutated and re-signed with the right keys (issue 15, fuzz/signed.py) ----


def _signed_feed(name: str) -> Callable[[bytes], None]:
    def feed(data: bytes) -> None:
        from fuzz import signed

        signed.FEEDS[name](data)

    return feed


def _signed_seeds() -> list[bytes]:
    from fuzz import signed

    return signed.seeds()


TARGETS.update(
    {
        name: Target(name, _signed_feed(name), _signed_seeds)
        for name in ("signed_metadata", "signed_manifest", "signed_director", "signed_secondary")
    }
)
