"""Uploads to the Image repository service (§5.3.1): the uploader's delegation decides.

A supplier uploads its own role's targets metadata, signed with its own keys, in every
encoding the repository publishes; the OEM admin may upload the top-level targets signed
elsewhere. Every check runs before anything changes:

- the uploader owns the role (its token names it); hash bins are signed by the repository;
- a threshold of the role's keys, as its delegation lists them, signs it;
- a supplier role delegates nothing further, and lists only paths and hardware ids its
  delegation allows;
- every image it lists was uploaded, with that length;
- its version is above the current one (the first upload of a new role: above 0), and it
  has not expired.

A role is published once its upload has arrived in every encoding with the same content.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from director import repostate
from director.image_delegations import Found, find_delegation
from uptane.errors import MalformedInput, UptaneError
from uptane.metadata import JSON, DelegatedRole, Metadata, Targets, decode
from uptane.paths import check_target_path
from uptane.signatures import check_threshold
from uptane.trust import is_delegated_path

if TYPE_CHECKING:
    from director.image_repo import ImageRepository

NAME = "image"
ADMIN = "admin"


class Forbidden(Exception):
    """An upload the uploader's role is not authorised for (HTTP 403)."""


class Conflict(Exception):
    """An upload that contradicts the repository's state (HTTP 409)."""


def path_matches(pattern: str, path: str) -> bool:
    """TUF delegation path pattern, matched by the core's one implementation."""
    return is_delegated_path(DelegatedRole("", [], 1, paths=[pattern]), path)


def delegation(repo: ImageRepository, role: str) -> Found:
    found = find_delegation(repo.builder, role)
    if found is None:
        raise Forbidden(f"role {role!r} is not delegated")
    if found.delegation is None:
        raise Forbidden(f"{role!r} is a hash bin, signed by the repository itself")
    return found


def check_image_upload(repo: ImageRepository, uploader: str, path: str) -> str:
    """Which role an image upload at ``path`` belongs to; Forbidden if the uploader's
    delegation does not cover the path."""
    check_target_path(path)
    if uploader == ADMIN:
        return "targets"
    d = delegation(repo, uploader).delegation
    assert d is not None
    if not any(path_matches(p, path) for p in d.paths or []):
        raise Forbidden(f"role {uploader!r} is not delegated path {path[:64]!r}")
    return uploader


def upload_metadata(
    repo: ImageRepository, uploader: str, role: str, data: bytes, encoding: str, now: datetime
) -> tuple[int, bool]:
    """Check an upload of ``role`` (see the module docstring) and keep it until it has
    arrived in every encoding; the version and whether it is now published. The caller
    holds the repository's lock."""
    if role == "targets":
        if uploader != ADMIN:
            raise Forbidden("only the OEM admin may upload top-level targets")
    elif uploader != role:
        raise Forbidden(f"role {uploader!r} may not upload metadata of role {role!r}")
    b = repo.builder
    if encoding not in b.encodings:
        raise MalformedInput(f"this repository does not publish {encoding}")
    md: Metadata[Any] = decode(data, repo.limits, encoding=encoding, role_type="targets")
    new = md.signed
    assert isinstance(new, Targets)
    if role == "targets":
        _check_top_targets(repo, md, new)
    else:
        _check_delegated(repo, role, md, new)
    for tpath, tf in new.targets.items():
        check_target_path(tpath)
        src = repo.image_path(tf)
        if src is None or src.stat().st_size != tf.length:
            raise Conflict(f"image {tpath[:64]!r} has not been uploaded")
    current = b.version_of(role) if b.has_role(role) else 0
    if new.version <= current:
        # not an attack on the repository: another upload (or an offline change) came
        # first, and the uploader signed from what it read before that
        raise Conflict(
            f"{role} version {new.version} is not above the current {current}:"
            " another version was published first. Read the role again and sign the"
            " next version"
        )
    if new.is_expired(now):
        raise Conflict("the uploaded metadata is already expired")
    return new.version, _arrived(repo, role, new, data, encoding, now)


def _check_top_targets(repo: ImageRepository, md: Metadata[Any], new: Targets) -> None:
    """Top-level targets: signed by a threshold of the root's targets keys, and keeping
    the delegations as they are (``delegate`` changes those)."""
    assert md.signed_bytes is not None
    b = repo.builder
    keys, entry = b.root.role_keys("targets")
    check_threshold(
        md.signed_bytes, md.signatures, keys, entry.keyids, entry.threshold, repo.limits
    )
    cur = b.targets
    if (cur.delegations and cur.delegations.to_dict()) != (
        new.delegations and new.delegations.to_dict()
    ):
        raise Conflict("top-level targets must keep the delegations; use `delegate`")


def _check_delegated(repo: ImageRepository, role: str, md: Metadata[Any], new: Targets) -> None:
    """A supplier's targets: signed by a threshold of its delegated keys, delegating
    nothing, every entry inside its delegated paths and hardware ids."""
    assert md.signed_bytes is not None
    found = delegation(repo, role)
    d = found.delegation
    assert d is not None
    try:
        check_threshold(
            md.signed_bytes,
            md.signatures,
            found.keys,
            found.keyids,
            found.threshold,
            repo.limits,
            repository=NAME,
            role=role,
        )
    except UptaneError as e:
        raise Forbidden(str(e)) from None
    if new.delegations is not None:
        raise Forbidden("a supplier role may not delegate further")
    for tpath, tf in new.targets.items():
        if not any(path_matches(p, tpath) for p in d.paths or []):
            raise Forbidden(f"role {role!r} is not delegated path {tpath[:64]!r}")
        if d.hardware_ids is not None and not set(tf.hardware_ids) <= set(d.hardware_ids):
            raise Forbidden(f"role {role!r} may not sign for hardware {tf.hardware_ids}")


def _arrived(
    repo: ImageRepository, role: str, new: Targets, data: bytes, encoding: str, now: datetime
) -> bool:
    """Keep a checked upload until ``role`` has arrived in every encoding the repository
    publishes, then install it; True once installed. Every encoding carries its own
    signature over its own bytes; the signed content must be the same."""
    pending = repo.pending.setdefault(role, {})
    pending = {e: v for e, v in pending.items() if v[0].version == new.version}
    pending[encoding] = (new, data)
    repo.pending[role] = pending
    b = repo.builder
    if set(pending) != set(b.encodings):
        return False
    first = pending[JSON][0].to_dict()
    if any(m.to_dict() != first for m, _ in pending.values()):
        del repo.pending[role]
        raise Conflict(f"the {role} uploads differ between encodings")
    files = {e: v[1] for e, v in pending.items()}
    if role == "targets":
        repo.install_targets(b, new, files)
    else:
        b.install_signed(role, new, files, parent=delegation(repo, role).parent)
    b.publish(now)
    repostate.save(b, repo.paths.metadata)
    del repo.pending[role]
    return True


__all__ = [
    "ADMIN",
    "NAME",
    "Conflict",
    "Forbidden",
    "check_image_upload",
    "delegation",
    "path_matches",
    "upload_metadata",
]
