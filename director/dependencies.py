"""Dependencies and conflicts between images, and the downgrade rule: what the Director
checks before it accepts an assignment (§5.3.2.1 step 5: the Director "SHALL take into
account *dependencies* and *conflicts* between images").

An image declares them in its Image-repository targets entry, in ``custom`` (signed with
the entry by the OEM or the supplier; ``uptane-image-repo add-target --requires/--conflicts``
writes them)::

    "requires":  [{"image": "gw/gw-2.bin"},                      # by name
                  {"hardware_id": "gw-v1", "min_release_counter": 2}]   # by release counter
    "conflicts": [{"image": "ivi/ivi-1.bin"}, {"hardware_id": "tcu-v4"}]

A rule names an image path, a hardware id, a minimum release counter, or several of them
(all must hold). It is about the *other* ECUs of the same vehicle:

- ``requires``: some other ECU runs a matching image, or is assigned one (pending or in
  flight). When only an assignment matches, the new assignment waits for it: it goes out in
  a later bundle, once that one is installed (so a gateway image is installed before the
  brake image that needs it). Nothing matching: refused, with the rule and what the vehicle
  runs.
- ``conflicts``: no other ECU runs or is assigned a matching image; and no other ECU's
  image (as assigned through this Director) declares a conflict that the new one matches.

A **downgrade** (a release counter lower than the one the ECU reports running) is refused
unless forced. Forcing only lets the Director send it: the ECU's own rollback check
(§5.4.4.2 step 10.4, release counter >= previous) still refuses it, and the assignment then
fails with the ECU's attack indicator.

Everything here is pure: the caller reads the vehicle and passes plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from director.common import HWID_RE, Conflict, Invalid
from uptane.errors import UptaneError
from uptane.paths import check_target_path

#: most rules of each kind one image may declare
MAX_RULES = 16


class DependencyRefused(Conflict):
    """An assignment its image's dependencies, conflicts or release counter refuse (409)."""


@dataclass(frozen=True)
class Rule:
    """Matches an ECU's image by path, hardware id and minimum release counter (each
    optional, at least one given)."""

    image: str | None = None
    hardware_id: str | None = None
    min_release_counter: int | None = None

    def matches(self, ecu: EcuImage) -> bool:
        if self.hardware_id is not None and ecu.hardware_id != self.hardware_id:
            return False
        if self.image is not None and ecu.path != self.image:
            return False
        if self.min_release_counter is not None:
            rc = ecu.release_counter
            return rc is not None and rc >= self.min_release_counter
        return ecu.path is not None

    def describe(self) -> str:
        parts = []
        if self.image is not None:
            parts.append(repr(self.image))
        if self.hardware_id is not None:
            parts.append(f"hardware {self.hardware_id!r}")
        if self.min_release_counter is not None:
            parts.append(f"release counter >= {self.min_release_counter}")
        return " with ".join(parts)

    @classmethod
    def from_dict(cls, d: Any, what: str) -> Rule:
        if (
            not isinstance(d, dict)
            or not d
            or set(d)
            - {
                "image",
                "hardware_id",
                "min_release_counter",
            }
        ):
            raise Invalid(f"{what}: a rule is an object of image, hardware_id, min_release_counter")
        image, hwid, rc = d.get("image"), d.get("hardware_id"), d.get("min_release_counter")
        if image is not None:
            if not isinstance(image, str):
                raise Invalid(f"{what}: image must be a target path")
            try:
                check_target_path(image)
            except UptaneError as e:
                raise Invalid(f"{what}: {e.message}") from None
        if hwid is not None and (not isinstance(hwid, str) or not HWID_RE.match(hwid)):
            raise Invalid(f"{what}: bad hardware_id")
        if rc is not None and (isinstance(rc, bool) or not isinstance(rc, int) or rc < 0):
            raise Invalid(f"{what}: min_release_counter must be a non-negative integer")
        return cls(image, hwid, rc)


@dataclass(frozen=True)
class EcuImage:
    """One ECU and an image it runs or is assigned (``path`` None: nothing known)."""

    serial: str
    hardware_id: str
    path: str | None
    release_counter: int | None
    #: the conflicts this image declares (known for images assigned through the Director)
    conflicts: tuple[Rule, ...] = ()


@dataclass
class Rules:
    """An image's dependency rules."""

    requires: list[Rule] = field(default_factory=list)
    conflicts: list[Rule] = field(default_factory=list)

    @classmethod
    def of(cls, custom: Mapping[str, Any] | None, path: str) -> Rules:
        """The rules in an image's ``custom`` (Invalid, 422, when they are malformed)."""
        out = cls()
        for key, dest in (("requires", out.requires), ("conflicts", out.conflicts)):
            value = (custom or {}).get(key)
            if value is None:
                continue
            what = f"image {path[:64]!r}: custom.{key}"
            if not isinstance(value, list) or len(value) > MAX_RULES:
                raise Invalid(f"{what} must be a list of at most {MAX_RULES} rules")
            dest.extend(Rule.from_dict(d, what) for d in value)
        return out

    def to_custom(self) -> dict[str, Any]:
        """The rules as the assignment row keeps them (``image_custom``)."""
        out: dict[str, Any] = {}
        for key, rules in (("requires", self.requires), ("conflicts", self.conflicts)):
            if rules:
                out[key] = [
                    {
                        k: v
                        for k, v in (
                            ("image", r.image),
                            ("hardware_id", r.hardware_id),
                            ("min_release_counter", r.min_release_counter),
                        )
                        if v is not None
                    }
                    for r in rules
                ]
        return out


@dataclass
class Vehicle:
    """What the checks read of one vehicle: each ECU as it runs now (its last report) and,
    per ECU, the image of its assignment pending or in flight, if any."""

    vin: str
    installed: dict[str, EcuImage]
    upcoming: dict[str, EcuImage] = field(default_factory=dict)


def check_downgrade(ecu: EcuImage, path: str, release_counter: int | None, force: bool) -> None:
    """Refuse a release counter lower than the one ``ecu`` runs, unless ``force``."""
    running = ecu.release_counter
    if force or release_counter is None or running is None or release_counter >= running:
        return
    raise DependencyRefused(
        f"downgrade refused: ECU {ecu.serial} runs release counter {running}, {path!r} has"
        f" {release_counter}. Pass force to send it anyway; the ECU's own rollback check"
        " (release counter >= previous) will still refuse it"
    )


def _runs(e: EcuImage) -> str:
    if e.path is None:
        return f"{e.serial} runs nothing known"
    rc = "" if e.release_counter is None else f", release counter {e.release_counter}"
    return f"{e.serial} runs {e.path!r}{rc}"


def prerequisite(
    vehicle: Vehicle, serial: str, path: str, rules: Rules, *, also: Mapping[str, EcuImage]
) -> str | None:
    """Check an assignment of ``path`` to ECU ``serial`` against the vehicle and against
    ``also`` (the other assignments of the same request, by ECU). Returns the ECU whose
    assignment must be installed first (None: none), or raises DependencyRefused."""
    upcoming = {**vehicle.upcoming, **also}
    others = [s for s in vehicle.installed if s != serial]
    wait: str | None = None
    for rule in rules.requires:
        if any(rule.matches(vehicle.installed[s]) for s in others if s not in upcoming):
            continue  # runs it, and nothing assigned will change that
        coming = [s for s in others if s in upcoming and rule.matches(upcoming[s])]
        if coming:
            if not any(rule.matches(vehicle.installed[s]) for s in coming):
                wait = wait or coming[0]
            continue
        seen = "; ".join(_runs(vehicle.installed[s]) for s in others[:8]) or "no other ECU"
        raise DependencyRefused(
            f"{path!r} for {serial} requires {rule.describe()} on another ECU of"
            f" {vehicle.vin}; none runs it or is assigned it ({seen}). Assign that image"
            " first, or in the same request"
        )
    new = EcuImage(serial, vehicle.installed[serial].hardware_id, path, None, ())
    for s in others:
        for image in (vehicle.installed[s], upcoming.get(s)):
            if image is None:
                continue
            _check_conflict(
                rules.conflicts,
                image,
                path,
                serial,
                "runs" if image is vehicle.installed[s] else "is assigned",
            )
            for rule in image.conflicts:
                if rule.matches(new):
                    raise DependencyRefused(
                        f"{path!r} for {serial} is refused: {image.path!r} on {s} conflicts"
                        f" with {rule.describe()}"
                    )
    return wait


def _check_conflict(
    conflicts: list[Rule], image: EcuImage, path: str, serial: str, how: str
) -> None:
    for rule in conflicts:
        if rule.matches(image):
            raise DependencyRefused(
                f"{path!r} for {serial} conflicts with {rule.describe()}: ECU {image.serial}"
                f" {how} {image.path!r}"
            )


__all__ = [
    "MAX_RULES",
    "DependencyRefused",
    "EcuImage",
    "Rule",
    "Rules",
    "Vehicle",
    "check_downgrade",
    "prerequisite",
]
