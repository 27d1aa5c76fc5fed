"""Figure 9: the size of the Director's targets metadata for one ECU, DER against JSON.

The real services make it: an Image repository (:class:`director.image_repo.
ImageRepository`) signs one image (a brake controller firmware, with the hashes and
fields it always lists), and a Director (:class:`director.director.Director`) registers a
vehicle with one ECU, assigns it that image and signs the vehicle's targets. The figure is
the size of the ``compact-der`` targets a Secondary gets (the DER flavour the link
negotiates when both ends have it, docs/link-protocol.md) over the served
``targets.json`` of the same version (≤ 0.4); the standard Uptane DER's ratio
(``targets.der`` as served) is in the details. No timing: sizes are exact.

All three files are the Director's own, as it serves them (``targets.cder``,
``targets.der``, ``targets.json`` of one version, from its per-vehicle tables): nothing is
re-encoded here.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from bench.common import Figure, not_yet
from bench.repos import now

NAME = "der_director_targets_size"
TITLE = "DER Director targets for one ECU vs JSON encoding of the same metadata"
GOAL = "size compact-der / JSON ≤ 0.4 (the standard DER's ratio in the details)"
VIN, ECU, HW = "WVWZZZ1JZXW000001", "ECU-BRAKE-00042", "brake-ctl-v2"
IMAGE = "brake/brake-controller-fw-5.2.1.bin"


def director_targets(work: Path) -> tuple[bytes, bytes, bytes, int]:
    """The Director's targets for a one-ECU vehicle with one assigned image: compact-der,
    standard DER and JSON as the Director serves them, and their version."""
    from director.director import Director, EcuSpec
    from director.image_repo import ImageRepository, default_offline_dir
    from uptane.keys import PrivateKey

    t = now()
    image_dir = work / "image-repo"
    ImageRepository.init(image_dir, default_offline_dir(image_dir), t)
    repo = ImageRepository(image_dir, t)
    repo.stage_target(IMAGE, random.Random(9).randbytes(4096), [HW], 5)
    ImageRepository(image_dir, t, offline_dir=default_offline_dir(image_dir)).sign(t)
    ddir = work / "director"
    Director.init(
        ddir,
        str(image_dir / "metadata"),
        (image_dir / "metadata" / "1.root.json").read_bytes(),
        offline_dir=work / "director-offline",
        now=t,
    )
    d = Director(ddir)
    try:
        d.register_vehicle(VIN, [EcuSpec(ECU, HW, PrivateKey.generate().key, True)])
        d.assign(VIN, [(ECU, IMAGE)])
        der = d.metadata_file(VIN, "targets.der")
        js = d.metadata_file(VIN, "targets.json")
        cder = d.metadata_file(VIN, "targets.cder")  # the codec's suffix
        assert der is not None and js is not None and cder is not None
    finally:
        d.dispose()
    from uptane.codec import COMPACT_DER
    from uptane.limits import Limits
    from uptane.metadata import DER, JSON, decode

    lim = Limits.primary()
    a = decode(der, lim, encoding=DER, role_type="targets")
    b = decode(js, lim, encoding=JSON, role_type="targets")
    c = decode(cder, lim, encoding=COMPACT_DER, role_type="targets")
    assert a.signed.version == b.signed.version == c.signed.version
    assert IMAGE in a.signed.targets
    # the same metadata, three encodings
    assert a.signed.targets == b.signed.targets == c.signed.targets
    return cder, der, js, a.signed.version


def content_bytes(der: bytes, encoding: str) -> dict[str, int]:
    """What a DER file must carry whatever the encoding: digests, signatures and key ids
    as raw bytes, and the strings; the rest of the file is ASN.1 framing."""
    from uptane.limits import Limits
    from uptane.metadata import decode

    md = decode(der, Limits.primary(), encoding=encoding, role_type="targets")
    t = md.signed
    out = {"digests": 0, "signatures": 0, "key_ids": 0, "strings": 0}
    for path, tf in t.targets.items():
        out["digests"] += sum(len(h) // 2 for h in tf.hashes.values())
        out["strings"] += len(path.encode()) + sum(len(h.encode()) for h in tf.hardware_ids)
        out["strings"] += sum(len(e.encode()) for e in tf.ecu_ids)
    out["strings"] += len((t.vehicle_id or "").encode()) + len(t.spec_version.encode())
    for sig in md.signatures:
        out["signatures"] += len(sig.sig)
        out["key_ids"] += len(sig.keyid) // 2
    out["framing_and_numbers"] = len(der) - sum(out.values())
    return out


def run(smoke: bool = False) -> list[Figure]:
    try:
        with tempfile.TemporaryDirectory(prefix="bench-der-") as tmp:
            cder, der, js, version = director_targets(Path(tmp))
    except ImportError as e:
        return [not_yet(NAME, TITLE, GOAL, f"the Director is not importable yet: {e}")]
    ratio = len(cder) / len(js)
    standard = len(der) / len(js)
    parts = content_bytes(cder, "compact-der")
    return [
        Figure(
            NAME,
            TITLE,
            GOAL,
            value=float(len(cder)),
            reference=float(len(js)),
            ratio=ratio,
            met=ratio <= 0.4,
            unit="bytes, compact-der targets",
            reference_unit="bytes, targets.json",
            notes=(
                f"Director targets version {version} for vehicle {VIN} with one ECU, one "
                "image as the Director signs it (the Image repository's sha256 and sha512, "
                "hardware id, release counter, ECU id, the vehicle id), one ed25519 "
                "signature, in compact-der: what a Secondary gets when both ends of its "
                "link have compact-der (targets.cder as the Director serves it). The "
                f"standard Uptane DER (targets.der as served) is "
                f"{len(der)} bytes, ratio {standard:.3f}. Compact-der bytes by what they "
                "carry: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in parts.items()) + "."
            ),
            details={
                "compact_der_bytes": len(cder),
                "standard_der_bytes": len(der),
                "json_bytes": len(js),
                "standard_der_ratio": round(standard, 4),
                "compact_der_bytes_by_content": parts,
                "standard_der_bytes_by_content": content_bytes(der, "der"),
            },
        )
    ]
