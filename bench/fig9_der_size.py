"""Figure 9: the size of the Director's targets metadata for one ECU, DER against JSON.

One Director repository (:class:`uptane.repository.RepositoryBuilder`, both encodings, one
ed25519 targets key) assigns one image to one ECU: path, length, SHA-256 and SHA-512,
hardware id, release counter, ECU id and the vehicle id: what ``director.Director`` signs
for an image the Image repository lists with SHA-256 and SHA-512.
The figure is the size of the signed DER file over the signed canonical-JSON file of the
same metadata (≤ 0.4). No timing: sizes are exact.
"""

from __future__ import annotations

import random

from bench.common import Figure
from bench.repos import director_repository
from uptane.metadata import DER, JSON, TargetFile

NAME = "der_director_targets_size"
TITLE = "DER Director targets for one ECU vs JSON encoding of the same metadata"
GOAL = "size DER / JSON ≤ 0.4"


def run(smoke: bool = False) -> list[Figure]:
    data = random.Random(9).randbytes(4096)
    image = TargetFile.from_data(
        "brake/brake-controller-fw-5.2.1.bin",
        data,
        ("sha256", "sha512"),
        hardware_ids=["brake-ctl-v2"],
        release_counter=5,
    )
    ecus = {"ECU-BRAKE-00042": "brake-ctl-v2"}
    d = director_repository(
        "WVWZZZ1JZXW000001", {"ECU-BRAKE-00042": image}, ecus, encodings=(JSON, DER)
    )
    der = d.builder.files[DER]["targets"]
    js = d.builder.files[JSON]["targets"]
    ratio = len(der) / len(js)
    return [
        Figure(
            NAME,
            TITLE,
            GOAL,
            value=float(len(der)),
            reference=float(len(js)),
            ratio=ratio,
            met=ratio <= 0.4,
            unit="bytes, DER",
            reference_unit="bytes, canonical JSON",
            notes=(
                "One target (sha256 + sha512, hardware id, release counter, ECU id), "
                "the vehicle id, one ed25519 signature; both files as served."
            ),
        )
    ]
