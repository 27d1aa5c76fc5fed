"""Partial verification for a Secondary (Uptane §5.4.4.1), sans-I/O.

A partial-verification Secondary trusts only the Director's root and checks the Director's
targets metadata: no snapshot or timestamp binding (the Standard lets §5.4.4.6 step 2 be
skipped), but the threshold of the targets keys, a version that never decreases, expiry
against the given time, the Director-only checks and the vehicle id, and then this ECU's
entry (ECU id, hardware id, release counter). Every check is the one in
:mod:`uptane.trust` / :mod:`uptane.verify`; this module only sequences them.

The codec reads the Director targets (:meth:`uptane.codec.Codec.read_targets`); both
encodings then take the same steps. DER Director targets (the constrained path) are never
decoded whole: :func:`uptane.encoding.der_targets.walk_targets` checks them as strictly as
the full decoder but one entry at a time, keeping only this ECU's entry; the threshold is
checked over the signed bytes in place, and the Director checks walk the entries again one
at a time. JSON Director targets are decoded whole and kept whole.

State: ``root`` and ``targets`` (the latest verified Director files) and their exact bytes in
``raw`` for the caller to persist. For DER, ``targets`` is the *rollback floor* only: a
``Metadata[Targets]`` holding the version, expiry, vehicle id and this ECU's entry, with no
signatures and no signed bytes (:meth:`TargetsWalk.floor`); a caller that has persisted
``raw["targets"]`` may drop it from ``raw``, nothing later needs it. On any failure the
previously trusted targets stay trusted. Root versions that verified before a later step
failed are kept, as in the root loop of §5.4.4.3 (each one is signed by the previous root's
keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from uptane.codec import DER, TargetsView, codec_for
from uptane.errors import EndlessDataAttack, MalformedInput, UptaneError
from uptane.keys import Key
from uptane.limits import Limits
from uptane.metadata import Metadata, Root, TargetFile, Targets
from uptane.signatures import check_threshold
from uptane.trust import (
    check_director_targets,
    check_not_expired,
    check_targets_version,
    peek_version,
    verify_root_update,
    verify_trusted_root,
)
from uptane.verify import check_target_for_ecu

REPOSITORY = "director"


class PartialVerifier:
    """The Director metadata one Secondary trusts, and the §5.4.4.1 steps over it.

    ``previous_targets`` (optional) is the last Director targets this ECU accepted: it is
    re-verified against ``director_root`` (signatures only; its expiry does not matter, it
    is the rollback floor). If it no longer verifies it is dropped and named in
    ``dropped``.
    """

    def __init__(
        self,
        director_root: bytes,
        ecu_id: str,
        hardware_id: str,
        limits: Limits,
        *,
        encoding: str = DER,
        previous_targets: bytes | None = None,
        vehicle_id: str | None = None,
    ) -> None:
        self.ecu_id = ecu_id
        self.hardware_id = hardware_id
        self.limits = limits
        self.encoding = encoding
        self.codec = codec_for(encoding)
        self.vehicle_id = vehicle_id
        self.root: Metadata[Root] = verify_trusted_root(
            director_root, limits, encoding=encoding, repository=REPOSITORY
        )
        self.targets: Metadata[Targets] | None = None
        self.raw: dict[str, bytes] = {"root": bytes(director_root)}
        self.dropped: list[str] = []
        if previous_targets is not None:
            try:
                keys, entry = self.root.signed.role_keys("targets")
                view = self._read(previous_targets)
                check_threshold(
                    view.payload,
                    view.metadata.signatures,
                    keys,
                    entry.keyids,
                    entry.threshold,
                    limits,
                    role="targets",
                )
                md = view.floor()
            except UptaneError:
                self.dropped.append("targets")
            else:
                self.targets = md
                self.raw["targets"] = bytes(previous_targets)

    @classmethod
    def load(
        cls,
        files: dict[str, bytes],
        ecu_id: str,
        hardware_id: str,
        limits: Limits,
        *,
        encoding: str = DER,
        vehicle_id: str | None = None,
    ) -> PartialVerifier:
        """Rebuild from persisted ``raw`` (``root`` required, ``targets`` optional)."""
        if "root" not in files:
            raise MalformedInput("persisted state has no root", repository=REPOSITORY, role="root")
        return cls(
            files["root"],
            ecu_id,
            hardware_id,
            limits,
            encoding=encoding,
            previous_targets=files.get("targets"),
            vehicle_id=vehicle_id,
        )

    def update_roots(self, root_updates: list[bytes] | tuple[bytes, ...], now: datetime) -> int:
        """§5.4.4.1 (optional) / §5.4.4.3: apply Director root versions N+1, N+2, ... through
        the same per-step check as full verification; versions already trusted are skipped.
        When any were given, the final root must not be expired. Returns how many were
        accepted."""
        try:
            self.limits.check_count(
                "root updates", len(root_updates), self.limits.max_root_rotations
            )
        except UptaneError as e:
            raise e.at(repository=REPOSITORY, role="root") from None
        accepted = 0
        targets_keys = self._targets_keys()
        for data in root_updates:
            try:
                if peek_version(data, self.limits, encoding=self.encoding) <= (
                    self.root.signed.version
                ):
                    continue
            except UptaneError as e:
                raise e.at(repository=REPOSITORY, role="root") from None
            self.root = verify_root_update(
                self.root, data, self.limits, encoding=self.encoding, repository=REPOSITORY
            )
            self.raw["root"] = bytes(data)
            accepted += 1
        if accepted and self.targets is not None and self._targets_keys() != targets_keys:
            # §5.4.4.3 fast-forward recovery, for the one role a partial ECU tracks: the
            # targets keys were rotated, so targets signed by the old ones (a leaked key may
            # have pushed the version far ahead) are forgotten; the installed image's release
            # counter still bounds any rollback (§5.4.3.4).
            self.targets = None
            self.raw.pop("targets", None)
        if root_updates:
            # §5.4.4.3 step 3: the latest root is not expired (freeze).
            check_not_expired(self.root.signed, now, role="root", repository=REPOSITORY)
        return accepted

    def _targets_keys(self) -> tuple[frozenset[str], int]:
        entry = self.root.signed.roles["targets"]
        return frozenset(entry.keyids), entry.threshold

    def verify(
        self,
        targets_bytes: bytes,
        now: datetime,
        *,
        root_updates: list[bytes] | tuple[bytes, ...] = (),
        installed_release_counter: int | None = None,
    ) -> TargetFile | None:
        """§5.4.4.1: verify the Director targets and return this ECU's entry, or None when
        the Director lists nothing for this ECU. ``installed_release_counter`` is the
        release counter of the image installed now (the floor for §5.4.3.4)."""
        # §5.4.4.1: the Director root first, when the Primary sent newer versions.
        self.update_roots(root_updates, now)
        # §5.4.4.6 steps 1, 3, 4, 5 (step 2, the snapshot binding, is skipped for partial
        # verification as the Standard allows), then the Director-only steps 6–7 (step 8
        # is for a Primary, which knows the vehicle's ECUs).
        keys, entry = self.root.signed.role_keys("targets")
        new, mine = self._verify_targets(targets_bytes, keys, entry.keyids, entry.threshold, now)
        # §5.4.3.4: this ECU's entry, its hardware id and its release counter.
        if mine is not None:
            check_target_for_ecu(
                mine,
                self.ecu_id,
                self.hardware_id,
                installed_release_counter,
                repository=REPOSITORY,
            )
        # every check passed: the new targets become the trusted ones
        self.targets = new
        self.raw["targets"] = bytes(targets_bytes)
        return mine

    def _read(self, data: bytes) -> TargetsView:
        # §5.4.4.6 step 1: at most Z bytes (endless data), checked before anything is read.
        cap = self.limits.bytes_for_role("targets")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedInput("metadata must be bytes")
        if len(data) > cap:
            raise EndlessDataAttack(f"{len(data)} bytes exceeds the {cap}-byte cap")
        return self.codec.read_targets(bytes(data), self.limits, self.ecu_id, cap=cap)

    def _verify_targets(
        self,
        data: bytes,
        keys: Mapping[str, Key],
        keyids: list[str],
        threshold: int,
        now: datetime,
    ) -> tuple[Metadata[Targets], TargetFile | None]:
        """§5.4.4.6 steps 1, 3–7 over Director targets, in the order of
        :func:`uptane.trust.verify_targets_bytes` and :func:`check_director_targets` (DER
        entries walked one at a time, never the whole model). Returns the rollback floor
        to keep and this ECU's entry."""
        try:
            view = self._read(data)
            # §5.4.4.6 step 3: a threshold of the targets keys the Director root names,
            # over the signed bytes as they are (for DER a view into ``data``, not a copy).
            check_threshold(
                view.payload, view.metadata.signatures, keys, keyids, threshold, self.limits
            )
            # §5.4.4.6 step 4: the version must not decrease (rollback).
            check_targets_version(view.metadata.signed.version, self.targets, role="targets")
            # §5.4.4.6 step 5: not expired (freeze).
            check_not_expired(view.metadata.signed, now, role="targets")
        except UptaneError as e:
            raise e.at(repository=REPOSITORY, role="targets") from None
        # §5.4.4.6 steps 6–7 and §5.2.3.1 (no delegations, no repeated ECU id, this
        # vehicle): the one check, iterating the entries again (DER: one at a time).
        check_director_targets(
            view.metadata.signed, vehicle_id=self.vehicle_id, repository=REPOSITORY
        )
        # at most one entry names this ECU: no ECU id repeats
        return view.floor(), view.mine

    def state(self) -> dict[str, Any]:
        """Versions of the trusted Director files, for status displays."""
        return {
            "repository": REPOSITORY,
            "root": self.root.signed.version,
            "targets": None if self.targets is None else self.targets.signed.version,
        }


def listed_target(
    data: bytes, path: str, limits: Limits, *, encoding: str = DER
) -> TargetFile | None:
    """The entry for ``path`` in Director targets this ECU verified before (its own
    persisted bytes; a lookup, no check), decoded one entry at a time for DER."""
    cap = limits.bytes_for_role("targets")
    if len(data) > cap:
        raise EndlessDataAttack(f"{len(data)} bytes exceeds the {cap}-byte cap")
    view = codec_for(encoding).read_targets(bytes(data), limits, "", cap=cap)
    return view.metadata.signed.targets.get(path)
