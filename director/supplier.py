"""The supplier's side of a delegation: upload an image to the Image repository service and
sign the role's next targets metadata with the supplier's own key (§5.3.1).

The supplier never needs the OEM's keys: it reads its role's current metadata from the
public download, adds or replaces an entry, signs the next version in every encoding the
repository publishes, and uploads each one with its role's token.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from director.httpcommon import service_error_text
from uptane.codec import JSON_CODEC, codecs
from uptane.delta import FORMAT, create_delta, delta_path
from uptane.identity import ImageIdentity, same_image
from uptane.keys import Signer
from uptane.limits import Limits
from uptane.metadata import DeltaImage, Metadata, TargetFile, Targets, decode
from uptane.paths import check_target_path


def release(
    base_url: str,
    token: str,
    role: str,
    signer: Signer,
    path: str,
    data: bytes,
    hardware_ids: list[str],
    release_counter: int,
    now: datetime,
    *,
    expiry: timedelta = timedelta(days=90),
    limits: Limits | None = None,
    timeout: float = 60.0,
    delta: DeltaImage | None = None,
) -> dict[str, Any]:
    """Upload ``data`` as ``path`` and publish the next version of ``role`` listing it
    (``delta``: the entry is a delta, naming its base and full image; issue 17)."""
    check_target_path(path)
    limits = limits or Limits.primary()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout) as c:
        r = c.put(f"/api/images/{path}", content=data, headers=auth)
        _check(r, f"upload of image {path}")
        mine = TargetFile.from_data(
            path,
            data,
            ("sha256", "sha512"),
            hardware_ids=list(hardware_ids),
            release_counter=release_counter,
        )
        mine.delta = delta
        stored = ImageIdentity.from_dict(r.json())
        if not same_image(stored, mine):
            raise ValueError("the service stored different bytes; upload the image again")
        cur = _current_targets(c, role, limits)
        model = Targets(version=cur.version + 1, expires=(now + expiry).replace(microsecond=0))
        model.targets = dict(cur.targets)
        model.targets[path] = mine
        result = _publish(c, role, model, signer, auth)
        return {**result, "target": path, "hashes": mine.hashes}


def make_delta(
    base: bytes, base_path: str, new: bytes, new_path: str
) -> tuple[str, bytes, DeltaImage]:
    """A delta from the released image ``base`` to ``new`` (issue 17): where the Director
    looks it up (:func:`uptane.delta.delta_path`), the patch (detools sequential,
    heatshrink) and its ``delta`` section. Publish it with :func:`release` (``delta=``),
    or stage it with ``custom={"delta": section.to_dict()}``, with the full image's
    hardware ids and release counter."""
    algs = ("sha256", "sha512")
    b = TargetFile.from_data(base_path, base, algs)
    full = TargetFile.from_data(new_path, new, algs)
    section = DeltaImage(FORMAT, b.identity(), full.identity())
    return delta_path(full, b), create_delta(base, new), section


def _current_targets(c: httpx.Client, role: str, limits: Limits) -> Targets:
    """``role``'s current targets, found as a client finds them: timestamp, snapshot."""
    ts = decode(_get(c, "/metadata/timestamp.json"), limits, role_type="timestamp")
    snap_v = ts.signed.snapshot_meta.version
    snap = decode(_get(c, f"/metadata/{snap_v}.snapshot.json"), limits, role_type="snapshot")
    entry = snap.signed.role_meta(role)
    if entry is None:
        # delegated, but not signed yet: this is the role's first version
        return Targets(version=0)
    cur = decode(
        _get(c, f"/metadata/{entry.version}.{role}.json"), limits, role_type="targets"
    ).signed
    assert isinstance(cur, Targets)
    return cur


def _publish(
    c: httpx.Client, role: str, model: Targets, signer: Signer, auth: dict[str, str]
) -> dict[str, Any]:
    """Sign ``model`` in every encoding the repository publishes (JSON always; another
    if its root is there) and upload each; the answer to the last upload."""
    published = [
        codec
        for codec in codecs()
        if codec is JSON_CODEC or c.get(f"/metadata/1.root{codec.suffix}").status_code == 200
    ]
    result: dict[str, Any] = {}
    for codec in published:
        md = Metadata(model, encoding=codec.name)
        md.sign(signer)
        name = f"{role}{codec.suffix}"
        r = c.put(f"/api/metadata/{name}", content=md.to_bytes(), headers=auth)
        _check(r, f"upload of {name}")
        result = r.json()
    return result


def _check(r: httpx.Response, what: str) -> None:
    """Raise the service's own error text (its ``detail``), not httpx's generic one."""
    if r.status_code >= 400:
        raise ValueError(f"{what} refused by the Image repository: {service_error_text(r)}")


def _get(c: httpx.Client, path: str) -> bytes:
    r = c.get(path)
    _check(r, f"download of {path}")
    return r.content
