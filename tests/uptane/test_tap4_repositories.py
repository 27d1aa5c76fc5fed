"""TAP 4 with any number of repositories (§5.2.6, §5.4.4.2 step 10): a Director, an OEM
Image repository and a supplier's repository; map rules with thresholds over several of
them, and terminating rules.

Each rule's threshold counts the repositories whose entry agrees with the Director's (same
length and hashes, SHALL-match section, hardware id, no release-counter rollback); the
Director's own entry is its agreement when the rule names it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from trust_support import NOW, VIN, Repo, director_entry, make_repo

from uptane.errors import (
    BadRepositoryMapping,
    ExpiredMetadata,
    TargetMismatch,
    TargetNotFound,
)
from uptane.limits import PRIMARY
from uptane.metadata import JSON, MapFile, Mapping, TargetFile
from uptane.trust import RepositoryTrust
from uptane.verify import FullVerificationResult, VehicleContext, full_verification

FW = b"brake firmware v7 " * 64
PATH = "brake/fw-7.bin"
ECU, HW = "ecu-brake", "brake-v2"
REPOS = {"director": ["https://d"], "oem": ["https://o"], "supplier": ["https://s"]}


def _entry(data: bytes = FW) -> TargetFile:
    return TargetFile.from_data(PATH, data, ("sha256",), hardware_ids=[HW])


class Three:
    """The Director names ``PATH`` for ``ECU``; the OEM and the supplier list it too."""

    def __init__(self, oem: bytes | None = FW, supplier: bytes | None = FW) -> None:
        self.director = make_repo(
            "director", vehicle_id=VIN, targets=[director_entry(FW, PATH, ECU, HW)]
        )
        self.oem = make_repo("oem", targets=[_entry(oem)] if oem else [])
        self.supplier = make_repo("supplier", targets=[_entry(supplier)] if supplier else [])
        for repo in (self.oem, self.supplier):
            repo.publish()
        self.vehicle = VehicleContext(VIN, "ecu-primary", {ECU: HW})

    def repos(self) -> tuple[Repo, ...]:
        return (self.director, self.oem, self.supplier)

    def run(self, *rules: Mapping, now=NOW) -> FullVerificationResult:
        director = self.director.trust(vehicle_id=VIN, ecu_ids=[ECU])
        others = {r.name: r.trust() for r in (self.oem, self.supplier)}
        sources = {r.name: r.source for r in self.repos()}
        map_file = MapFile(REPOS, list(rules))
        return full_verification(director, others, map_file, sources, now, self.vehicle, PRIMARY)


ALL_THREE = ["director", "oem", "supplier"]


def test_5_2_6_three_repositories_all_agree():
    result = Three().run(Mapping(["brake/*"], ALL_THREE, 3, True))
    (approved,) = result.images
    assert approved.path == PATH and set(approved.agreed) == {"oem", "supplier"}
    assert approved.image_target is approved.agreed["oem"]
    assert set(result.repositories) == {"oem", "supplier"} and not result.refused


@pytest.mark.parametrize("odd", ["oem", "supplier"])
def test_5_2_6_two_of_three_agreeing_meet_a_threshold_of_two(odd: str):
    other = b"something else entirely"
    world = Three(**{odd: other})  # type: ignore[arg-type]
    result = world.run(Mapping(["brake/*"], ALL_THREE, 2, True))
    (approved,) = result.images
    assert set(approved.agreed) == {"oem", "supplier"} - {odd}


def test_5_2_6_a_rule_without_the_director_needs_its_repositories_to_agree():
    # the OEM and the supplier must both list what the Director names
    rule = Mapping(["*"], ["oem", "supplier"], 2, True)
    (approved,) = Three().run(rule).images
    assert set(approved.agreed) == {"oem", "supplier"}
    with pytest.raises(TargetNotFound) as e:
        Three(supplier=None).run(rule)  # the supplier does not list it
    assert e.value.repository == "supplier"
    # one of them is enough with a threshold of one
    (approved,) = Three(supplier=None).run(Mapping(["*"], ["oem", "supplier"], 1, True)).images
    assert set(approved.agreed) == {"oem"}


def test_5_2_6_only_the_director_agreeing_is_below_a_threshold_of_two():
    world = Three(oem=b"other oem", supplier=b"other supplier")
    with pytest.raises(TargetMismatch) as e:
        world.run(Mapping(["brake/*"], ALL_THREE, 2, True))
    assert e.value.repository == "oem"  # the first repository that disagreed


def test_5_2_6_a_failing_terminating_rule_refuses_and_a_non_terminating_one_falls_through():
    world = Three(oem=b"other oem", supplier=b"other supplier")
    fallback = Mapping(["*"], ["director"], 1, True)
    with pytest.raises(TargetMismatch):
        world.run(Mapping(["brake/*"], ALL_THREE, 2, True), fallback)
    result = world.run(Mapping(["brake/*"], ALL_THREE, 2, False), fallback)
    (approved,) = result.images
    assert approved.rule == fallback and approved.agreed == {}


def test_5_2_6_no_matching_rule_refuses():
    with pytest.raises(BadRepositoryMapping):
        Three().run(Mapping(["engine/*"], ALL_THREE, 2, True))


def test_5_2_6_a_refused_repository_counts_as_disagreeing():
    world = Three()
    # the supplier's timestamp has expired: its refresh is refused (a freeze attack)
    world.supplier.builder.expiry["timestamp"] = timedelta(seconds=-1)
    world.supplier.publish()
    result = world.run(Mapping(["brake/*"], ALL_THREE, 2, True))
    (approved,) = result.images
    assert set(approved.agreed) == {"oem"}
    assert isinstance(result.refused["supplier"], ExpiredMetadata)
    assert result.refused["supplier"].repository == "supplier"
    # a rule that needs the supplier raises its error
    with pytest.raises(ExpiredMetadata):
        world.run(Mapping(["brake/*"], ALL_THREE, 3, True))


def test_5_2_6_map_file_with_three_repositories_round_trips_in_json():
    m = MapFile(
        REPOS,
        [Mapping(["brake/*"], ALL_THREE, 2, True), Mapping(["*"], ["director", "oem"], 2, False)],
    )
    back = MapFile.from_json(m.to_json(), PRIMARY)
    assert back == m


def test_full_verification_refuses_a_trust_under_another_name():
    world = Three()
    director = world.director.trust(vehicle_id=VIN, ecu_ids=[ECU])
    oem = RepositoryTrust("oem", world.oem.builder.trusted_root(JSON), PRIMARY)
    with pytest.raises(ValueError):
        full_verification(
            director,
            {"supplier": oem},
            MapFile(REPOS, [Mapping(["*"], ALL_THREE, 2, True)]),
            {r.name: r.source for r in world.repos()},
            NOW,
            world.vehicle,
            PRIMARY,
        )
