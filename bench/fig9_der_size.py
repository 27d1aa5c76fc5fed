"""Figure 9: the size of the Director's targets metadata for one ECU, DER against JSON.

The real services make it: an Image repository (:class:`director.image_repo.
ImageRepository`) signs one image (a brake controller firmware, with the hashes and
fields it always lists), and a Director (:class:`director.director.Director`) registers a
vehicle with one ECU, assigns it that image and signs the vehicle's targets in both
encodings. The figure is the size of the served ``targets.der`` over the served
``targets.json`` of the same version (≤ 0.4). No timing: sizes are exact.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from bench.common import Figure, not_yet
from bench.repos import now

NAME = "der_director_targets_size"
TITLE = "DER Director targets for one ECU vs JSON encoding of the same metadata"
GOAL = "size DER / JSON ≤ 0.4"
VIN, ECU, HW = "WVWZZZ1JZXW000001", "ECU-BRAKE-00042", "brake-ctl-v2"
IMAGE = "brake/brake-controller-fw-5.2.1.bin"


def director_targets(work: Path) -> tuple[bytes, bytes, int]:
    """The Director's targets for a one-ECU vehicle with one assigned image, as served
    in DER and JSON, and their version."""
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
    finally:
        d.dispose()
    assert der is not None and js is not None
    from uptane.limits import Limits
    from uptane.metadata import DER, JSON, decode

    lim = Limits.primary()
    a = decode(der, lim, encoding=DER, role_type="targets")
    b = decode(js, lim, encoding=JSON, role_type="targets")
    assert a.signed.version == b.signed.version and IMAGE in a.signed.targets
    assert a.signed.targets == b.signed.targets  # the same metadata, two encodings
    return der, js, a.signed.version


def content_bytes(der: bytes) -> dict[str, int]:
    """What the DER file must carry whatever the encoding: digests, signatures and key ids
    as raw bytes, and the strings; the rest of the file is ASN.1 framing."""
    from uptane.limits import Limits
    from uptane.metadata import DER, decode

    md = decode(der, Limits.primary(), encoding=DER, role_type="targets")
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
            der, js, version = director_targets(Path(tmp))
    except ImportError as e:
        return [not_yet(NAME, TITLE, GOAL, f"the Director is not importable yet: {e}")]
    ratio = len(der) / len(js)
    parts = content_bytes(der)
    return [
        Figure(
            NAME,
            TITLE,
            GOAL,
            value=float(len(der)),
            reference=float(len(js)),
            ratio=ratio,
            met=ratio <= 0.4,
            unit="bytes, targets.der",
            reference_unit="bytes, targets.json",
            notes=(
                f"Director targets version {version} for vehicle {VIN} with one ECU, one "
                "image as the Director signs it (the Image repository's sha256 and sha512, "
                "hardware id, release counter, ECU id, the vehicle id), one ed25519 "
                "signature; both files as the Director serves them. DER bytes by what they "
                "carry: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in parts.items()) + "."
            ),
            details={"der_bytes_by_content": parts},
        )
    ]
