"""Checks of images against the metadata that names them.

- :func:`check_target_for_ecu`: the per-ECU checks before install (§5.4.3.4): the ECU id
  entry, the hardware id and the release counter. Used by full verification, by partial
  verification and by every Secondary.
- :class:`ImageVerifier`: a streaming checker fed in chunks (§5.4.3.4): no more bytes than
  the signed length, every listed hash, and the exact length.
- :func:`full_verification`: full verification across the Director and the Image repository
  (§5.4.4.2), or any number of repositories, with the TAP 4 repository mapping (§5.2.6)
  consulted first. It returns the images a Primary may download, each as an
  :class:`ApprovedImage`.

Nothing here does I/O: metadata comes through the :class:`uptane.trust.MetadataSource`
objects the caller passes in, and ``now`` is an argument.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Callable, Iterable
from collections.abc import Mapping as MappingOf
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from uptane.delta import produced_image
from uptane.errors import (
    BadEcuId,
    BadHardwareId,
    BadHash,
    BadLength,
    BadRepositoryMapping,
    EndlessDataAttack,
    MixAndMatchAttack,
    RollbackAttack,
    TargetMismatch,
    UnsupportedAlgorithm,
    UptaneError,
)
from uptane.identity import same_image
from uptane.limits import Limits
from uptane.metadata import MapFile, Mapping, TargetFile
from uptane.trust import RepositoryTrust

if TYPE_CHECKING:
    from uptane.trust import MetadataSource, RefreshResult

HASH_ALGORITHMS = ("sha256", "sha512", "sha384", "sha224", "sha3_256", "sha3_512", "blake2b")


def check_target_for_ecu(
    target: TargetFile,
    ecu_id: str,
    hardware_id: str,
    installed_release_counter: int | None,
    *,
    repository: str = "director",
) -> None:
    """§5.4.3.4: the Director entry names this ECU, for this hardware, and does not roll the
    release counter back below what is installed."""
    if ecu_id not in target.ecu_ids:
        raise BadEcuId(
            f"target {target.path!r} is not for ECU {ecu_id!r}",
            repository=repository,
            role="targets",
        )
    listed_hw = target.ecu_ids[ecu_id]
    if listed_hw != hardware_id:
        raise BadHardwareId(
            f"target {target.path!r} is for hardware {listed_hw!r}, this ECU is {hardware_id!r}",
            repository=repository,
            role="targets",
        )
    check_hardware_id(target, hardware_id, repository=repository)
    check_release_counter(target, installed_release_counter, repository=repository)


def check_hardware_id(target: TargetFile, hardware_id: str, *, repository: str) -> None:
    """§5.4.3.4 step 3 / §5.2.3.1: when an entry lists hardware ids, this ECU's must be one."""
    if target.hardware_ids and hardware_id not in target.hardware_ids:
        raise BadHardwareId(
            f"target {target.path!r} is for hardware {target.hardware_ids}, "
            f"this ECU is {hardware_id!r}",
            repository=repository,
            role="targets",
        )


def check_release_counter(
    target: TargetFile, previous: int | None, *, repository: str = "director"
) -> None:
    """§5.4.3.4 / §5.4.4.2: the release counter must not be lower than the previous one."""
    if previous is None:
        return
    counter = target.release_counter if target.release_counter is not None else 0
    if counter < previous:
        raise RollbackAttack(
            f"release counter {counter} of {target.path!r} is below the installed {previous}",
            repository=repository,
            role="targets",
        )


class ImageVerifier:
    """Streams image bytes through every listed hash (§5.4.3.4).

    ``update`` refuses bytes past the signed length (endless data) before hashing them;
    ``finish`` requires the exact length and every hash to match. Memory does not grow with
    the image: only the hash states are kept.
    """

    def __init__(self, target: TargetFile, limits: Limits) -> None:
        if target.length > limits.image_bytes:
            raise EndlessDataAttack(
                f"image {target.path!r} is {target.length} bytes, the cap is {limits.image_bytes}"
            )
        limits.check_count("image hashes", len(target.hashes), limits.max_hashes)
        self.target = target
        self.received = 0
        self._hashers: dict[str, Any] = {}
        for alg in target.hashes:
            if alg not in HASH_ALGORITHMS:
                raise UnsupportedAlgorithm(f"hash algorithm {alg!r} cannot be checked")
            self._hashers[alg] = hashlib.new(alg)
        if not self._hashers:
            raise BadHash(f"image {target.path!r} lists no hash")

    def update(self, chunk: bytes | memoryview) -> None:
        """Feed the next chunk; refuses anything past the signed length."""
        n = len(chunk)
        if self.received + n > self.target.length:
            raise EndlessDataAttack(
                f"image {self.target.path!r} sent more than its {self.target.length} bytes"
            )
        self.received += n
        for h in self._hashers.values():
            h.update(chunk)

    @property
    def remaining(self) -> int:
        """Bytes still expected."""
        return self.target.length - self.received

    def finish(self) -> None:
        """Require the exact length and every hash; raises BadLength or BadHash."""
        if self.received != self.target.length:
            raise BadLength(
                f"image {self.target.path!r} is {self.received} bytes, "
                f"signed length is {self.target.length}"
            )
        for alg, h in self._hashers.items():
            expected = self.target.hashes[alg].lower()
            if not hmac.compare_digest(h.hexdigest(), expected):
                raise BadHash(f"image {self.target.path!r}: {alg} does not match")


def verify_image_bytes(target: TargetFile, data: bytes, limits: Limits) -> None:
    """Check a whole image held in memory (tests, small images): length and every hash."""
    v = ImageVerifier(target, limits)
    v.update(data)
    v.finish()


# --- full verification across the Director and the Image repository (§5.4.4.2) ----------

#: ``FullVerificationResult.stopped_early`` when every Director target is already installed
NO_NEW_TARGETS = "no new targets"


@dataclass
class VehicleContext:
    """What the Primary knows about its own vehicle: its id, the Primary's ECU id, every ECU
    with its hardware id, and what each ECU runs now.

    ``installed_release_counters`` holds the release counter of each ECU's current image
    (the "previous" counter of §5.4.4.2 step 10.2.3); ``installed_images`` the Director
    entry each ECU last installed, used for the "no new targets" stop (§5.4.4.2 step 6).
    """

    vehicle_id: str
    primary_id: str
    ecus: dict[str, str]
    installed_release_counters: dict[str, int] = field(default_factory=dict)
    installed_images: dict[str, TargetFile] = field(default_factory=dict)


@dataclass
class ApprovedImage:
    """One image that passed full verification for one ECU: what a Primary downloads (at
    most ``length`` bytes, checked against every one of ``hashes``, §5.4.2 step 4) and
    hands to that ECU together with the Director's metadata."""

    ecu_id: str
    hardware_id: str
    director_target: TargetFile
    #: the Image repository's entry (None only when a map rule approved it without the
    #: Image repository, e.g. a threshold-1 rule)
    image_target: TargetFile | None
    #: the map-file rule that approved it
    rule: Mapping | None = None
    #: the entry of every other repository that agreed, by repository name (TAP 4);
    #: ``image_target`` is the first of them
    agreed: dict[str, TargetFile] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The target file name, the same on both repositories."""
        return self.director_target.path

    @property
    def length(self) -> int:
        """The signed length: never download more (§5.4.3.3)."""
        return self.director_target.length

    @property
    def hashes(self) -> dict[str, str]:
        """Every hash to check, from the Director's metadata (§5.4.2 step 4)."""
        return dict(self.director_target.hashes)

    @property
    def url(self) -> str | None:
        """Where the Director says to download it, if it says (§5.2.3.1)."""
        return self.director_target.url

    @property
    def release_counter(self) -> int | None:
        return self.director_target.release_counter

    def verifier(self, limits: Limits) -> ImageVerifier:
        """A streaming checker for this image's bytes."""
        return ImageVerifier(self.director_target, limits)


@dataclass
class FullVerificationResult:
    """What :func:`full_verification` found. ``images`` is empty when it stopped early;
    ``stopped_early`` then says why (the Director's snapshot unchanged, or nothing new).

    ``repositories`` holds the refresh of every other repository (TAP 4: the Image
    repository, a supplier's, ...) by name, and ``refused`` the error of each one whose
    refresh failed: a map rule may still approve an image without it when enough other
    repositories agree (its threshold), so such an error is raised only when a rule needed
    that repository. ``image`` is the refresh of the first other repository (the Image
    repository in the Uptane default), or None when none was refreshed."""

    images: list[ApprovedImage]
    director: RefreshResult
    image: RefreshResult | None = None
    stopped_early: str | None = None
    repositories: dict[str, RefreshResult] = field(default_factory=dict)
    refused: dict[str, UptaneError] = field(default_factory=dict)

    def for_ecu(self, ecu_id: str) -> ApprovedImage | None:
        """The image approved for ``ecu_id``, if any."""
        return next((a for a in self.images if a.ecu_id == ecu_id), None)


def check_map_file(map_file: MapFile, trusted: Iterable[str], sources: Iterable[str]) -> None:
    """§5.2.6 / TAP 4, step 1 of §5.4.4.2: the map file is consistent and names only
    repositories this ECU trusts and can reach, any number of them; raises
    BadRepositoryMapping."""
    trusted, sources = set(trusted), set(sources)
    if not map_file.mapping:
        raise BadRepositoryMapping("the map file has no mapping rule")
    for i, rule in enumerate(map_file.mapping):
        if not rule.paths or not rule.repositories:
            raise BadRepositoryMapping(f"map rule {i} names no path or no repository")
        if len(set(rule.repositories)) != len(rule.repositories):
            raise BadRepositoryMapping(f"map rule {i} names a repository twice")
        if not 1 <= rule.threshold <= len(rule.repositories):
            raise BadRepositoryMapping(f"map rule {i}: threshold out of range")
        for name in rule.repositories:
            if name not in map_file.repositories:
                raise BadRepositoryMapping(f"map rule {i} names unknown repository {name!r}")
            if name not in trusted:
                raise BadRepositoryMapping(f"no trusted metadata for repository {name!r}")
            if name not in sources:
                raise BadRepositoryMapping(f"no metadata source for repository {name!r}")


def mapping_rules_for(map_file: MapFile, path: str) -> list[Mapping]:
    """The map rules whose paths match ``path``, in the map file's order, up to and
    including the first terminating one (TAP 4). Patterns are shell-style globs in which
    ``*`` also matches ``/``."""
    rules = []
    for rule in map_file.mapping:
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in rule.paths):
            rules.append(rule)
            if rule.terminating:
                break
    return rules


def check_director_image_match(
    director_target: TargetFile, image_target: TargetFile, *, repository: str = "image"
) -> None:
    """§5.4.4.2 step 10.2.1–10.2.2: the Image repository's entry for the same file name has
    the same length, the same hashes (same algorithms, same digests) and, when either side
    has a SHALL-match section, an equal one. Raises TargetMismatch."""
    d, i = director_target, image_target
    where = {"repository": repository, "role": "targets"}
    if d.path != i.path:
        raise TargetMismatch(f"file names differ: {d.path!r} and {i.path!r}", **where)
    # §5.4.4.2 step 10.2.1: non-custom metadata, length and hashes
    if d.length != i.length:
        raise TargetMismatch(
            f"{d.path!r}: the Director says {d.length} bytes, the Image repository {i.length}",
            **where,
        )
    d_hashes = {alg: h.lower() for alg, h in d.hashes.items()}
    i_hashes = {alg: h.lower() for alg, h in i.hashes.items()}
    if d_hashes != i_hashes:
        algs = sorted(set(d_hashes) | set(i_hashes))
        differ = [a for a in algs if d_hashes.get(a) != i_hashes.get(a)]
        raise TargetMismatch(f"{d.path!r}: hashes differ ({', '.join(differ)})", **where)
    # §5.4.4.2 step 10.2.2: SHALL-match custom metadata (project decision: the whole
    # shallMatch section, compared when either side has one; see docs/core.md)
    if (d.shall_match is not None or i.shall_match is not None) and d.shall_match != i.shall_match:
        raise TargetMismatch(f"{d.path!r}: the SHALL-match sections differ", **where)
    # issue 17: a delta is what the Image repository says it is (its format, the base it
    # patches, the full image it produces), or the ECU would check the produced image
    # against another image's hashes
    dd, di = d.delta, i.delta
    if (dd is None) != (di is None) or (
        dd is not None
        and di is not None
        and (
            dd.format != di.format
            or not same_image(dd.base, di.base)
            or not same_image(dd.target, di.target)
        )
    ):
        raise TargetMismatch(f"{d.path!r}: the delta sections differ", **where)


def _check_now(now: datetime) -> None:
    # §5.4.4.2 step 1: the current (or latest securely attested) time, supplied by the caller
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise TypeError("now must be a timezone-aware datetime (the secure current time)")


class _Repositories:
    """The repositories other than the Director (TAP 4), for step 10: each refreshed once
    (steps 6–9), its refusal kept, and each (repository, path, hardware id) looked up once
    through its delegations (§5.4.4.7)."""

    def __init__(
        self,
        trusts: MappingOf[str, RepositoryTrust],
        sources: MappingOf[str, MetadataSource],
        now: datetime,
    ) -> None:
        self.trusts, self.sources, self.now = trusts, sources, now
        self.results: dict[str, RefreshResult] = {}
        self.refused: dict[str, UptaneError] = {}
        self._found: dict[tuple[str, str, str], TargetFile] = {}

    def refresh(self, names: Iterable[str]) -> None:
        """§5.4.4.2 steps 6–9 for each repository named: root loop, timestamp, snapshot
        (its early stop only skips to step 10, using the trusted targets), targets."""
        for name in names:
            if name in self.results or name in self.refused:
                continue
            try:
                self.results[name] = self.trusts[name].refresh(self.sources[name], self.now)
            except UptaneError as e:
                self.refused[name] = e.at(repository=name)

    def find(self, name: str, path: str, hardware_id: str) -> TargetFile:
        """§5.4.4.2 step 10.1 / §5.4.4.7: the entry of ``name`` for the same file name,
        through the delegations that this ECU's hardware id and the path both match."""
        refused = self.refused.get(name)
        if refused is not None:
            raise refused
        key = (name, path, hardware_id)
        if key not in self._found:
            trust = self.trusts[name]
            self._found[key] = trust.find_target(
                path, self.sources[name], self.now, hardware_id=hardware_id
            )
        return self._found[key]


def _other_repositories(
    director: RepositoryTrust, image: RepositoryTrust | MappingOf[str, RepositoryTrust]
) -> dict[str, RepositoryTrust]:
    """The non-Director repositories by name: one (the Uptane default) or any number."""
    others = {image.name: image} if isinstance(image, RepositoryTrust) else dict(image)
    for name, trust in others.items():
        if trust.name != name or name == director.name:
            raise ValueError(f"repository {name!r}: a RepositoryTrust named {trust.name!r}")
    return others


def full_verification(
    director: RepositoryTrust,
    image: RepositoryTrust | MappingOf[str, RepositoryTrust],
    map_file: MapFile,
    sources: MappingOf[str, MetadataSource],
    now: datetime,
    vehicle: VehicleContext,
    limits: Limits,
    *,
    only_ecu: str | None = None,
) -> FullVerificationResult:
    """Full verification (§5.4.4.2) of the repositories' metadata, for every image the
    Director assigns to this vehicle (a Primary), or only for ``only_ecu``'s image (a
    full-verification Secondary, which §5.4.4.2 step 10 lets check just its own image and
    which need not know the other ECUs: ``vehicle.ecus`` then needs only this ECU).

    ``image`` is the Image repository's trust, or (TAP 4, any number of repositories) the
    trust of every repository other than the Director by name. ``sources`` maps each
    repository name of the map file to where its metadata comes from; each trust's
    ``name`` is its name there. The trusted state is updated in place (the caller persists
    ``raw`` only once this returns without error, so that an interrupted cycle is redone in
    full next time). Raises the :mod:`uptane.errors` error that names the attack when any
    check fails.
    """
    others = _other_repositories(director, image)
    # §5.4.4.2 (before step 1) / §5.2.6: the repository mapping comes first
    check_map_file(map_file, (director.name, *others), sources)
    if director.name not in sources:
        raise BadRepositoryMapping(f"no metadata source for the Director ({director.name!r})")
    _check_now(now)  # §5.4.4.2 step 1
    _check_director_bound_to_vehicle(director, vehicle, only_ecu)

    def ours(ecu_id: str) -> bool:
        return only_ecu is None or ecu_id == only_ecu

    # §5.4.4.2 steps 2–5: Director root loop, timestamp, snapshot (early stop when the
    # snapshot is unchanged, a SHALL), targets with the Director-only checks of §5.4.4.6
    director_result = director.refresh(sources[director.name], now)
    if director_result.stopped_early:
        return FullVerificationResult([], director_result, None, director_result.stopped_early)
    if director.targets is None:
        raise MixAndMatchAttack(
            "no trusted Director targets after refresh", repository=director.name
        )
    targets = director.targets.signed.targets
    limits.check_count("Director targets", len(targets), limits.max_targets)

    # §5.4.4.2 step 6: nothing that is not already installed -> stop (SHOULD); a delta
    # counts as installed once the full image it produces is
    if all(
        produced_image(t).same_image(vehicle.installed_images.get(ecu))
        for t in targets.values()
        for ecu in t.ecu_ids
        if ours(ecu)
    ):
        return FullVerificationResult([], director_result, None, NO_NEW_TARGETS)

    # §5.4.4.2 steps 6–9: every other repository a map rule names, in the map's order
    repos = _Repositories(others, sources, now)
    repos.refresh(n for rule in map_file.mapping for n in rule.repositories if n in others)
    approved = _approve_all(targets, ours, vehicle, map_file, director, repos)
    first = next(iter(repos.results.values()), None)
    return FullVerificationResult(
        approved, director_result, first, None, dict(repos.results), dict(repos.refused)
    )


def _approve_all(
    targets: MappingOf[str, TargetFile],
    ours: Callable[[str], bool],
    vehicle: VehicleContext,
    map_file: MapFile,
    director: RepositoryTrust,
    repos: _Repositories,
) -> list[ApprovedImage]:
    """§5.4.4.2 step 10: every image the Director lists, for every ECU it names that
    ``ours`` accepts, checked against the vehicle and approved by the map file."""
    approved: list[ApprovedImage] = []
    for path in sorted(targets):
        target = targets[path]
        if not target.ecu_ids:
            # §5.2.3.1: a Director entry SHALL name the ECU it is for
            raise BadEcuId(f"Director target {path!r} names no ECU", repository=director.name)
        for ecu_id in sorted(e for e in target.ecu_ids if ours(e)):
            hardware_id = vehicle.ecus[ecu_id]  # present: §5.4.4.6 ran in director.refresh
            # §5.4.3.4 / §5.4.4.2 step 10.2.3: this ECU, its hardware id, release counter
            previous = vehicle.installed_release_counters.get(ecu_id)
            check_target_for_ecu(target, ecu_id, hardware_id, previous, repository=director.name)
            rule, agreed = _approve_by_mapping(
                target, hardware_id, previous, map_file, director.name, repos
            )
            image_target = next(iter(agreed.values()), None)
            approved.append(ApprovedImage(ecu_id, hardware_id, target, image_target, rule, agreed))
    return approved


def _approve_by_mapping(
    target: TargetFile,
    hardware_id: str,
    previous: int | None,
    map_file: MapFile,
    director: str,
    repos: _Repositories,
) -> tuple[Mapping, dict[str, TargetFile]]:
    """§5.2.6 / TAP 4: the first matching rule of which at least ``threshold``
    repositories agree with the Director's entry approves ``target`` (the Director's own
    entry is the Director's agreement); a terminating rule that fails refuses it, and so
    does no rule. Returns the rule and the agreeing entries of the other repositories."""
    first_error: UptaneError | None = None
    for rule in mapping_rules_for(map_file, target.path):
        agreed: dict[str, TargetFile] = {}
        for name in rule.repositories:
            if name == director:
                continue
            try:
                candidate = repos.find(name, target.path, hardware_id)
                check_director_image_match(target, candidate, repository=name)
                # the repository's own entry must fit this ECU and not roll back either
                check_hardware_id(candidate, hardware_id, repository=name)
                check_release_counter(candidate, previous, repository=name)  # §5.4.4.2 10.2.3
            except UptaneError as e:
                # a repository that does not list the file, lists it differently or was
                # refused disagrees; the rule may still meet its threshold without it
                first_error = first_error or e.at(repository=name)
                continue
            agreed[name] = candidate
        if len(agreed) + (director in rule.repositories) >= rule.threshold:
            return rule, agreed
        # a failing terminating rule is the last one mapping_rules_for returned
    if first_error is not None:
        raise first_error
    raise BadRepositoryMapping(
        f"no map rule lets the repositories approve {target.path!r}", repository=director
    )


def _check_director_bound_to_vehicle(
    director: RepositoryTrust, vehicle: VehicleContext, only_ecu: str | None
) -> None:
    """The Director-only checks of §5.4.4.6 (no delegations, no repeated ECU id, ECU ids in
    this vehicle, this vehicle's id) run inside ``director`` (``check_director_targets``);
    make sure it was set up to run them for *this* vehicle. A Secondary checking only its
    own image may not know the other ECUs; a Primary must."""
    if not director.is_director or director.vehicle_id != vehicle.vehicle_id:
        raise ValueError(
            "the Director's RepositoryTrust must be created with director=True and this "
            "vehicle's id"
        )
    if only_ecu is None:
        if director.ecu_ids is None or set(director.ecu_ids) != set(vehicle.ecus):
            raise ValueError("a Primary's Director RepositoryTrust needs this vehicle's ECU ids")
    elif only_ecu not in vehicle.ecus:
        raise ValueError(f"only_ecu {only_ecu!r} is not in vehicle.ecus")
    elif director.ecu_ids is not None and not set(vehicle.ecus) <= set(director.ecu_ids):
        raise ValueError("the Director's RepositoryTrust does not know this vehicle's ECUs")
