"""Full verification across the Director and the Image repository (§5.4.4.2), with the
TAP 4 repository mapping (§5.2.6) consulted first.

The first part checks the pure pieces (map file, Director/Image match); the second builds a
real two-repository setup with RepositoryBuilder and runs :func:`full_verification` on it,
with the attacks of the threat model (§4.3) played against it.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from uptane.errors import (
    BadEcuId,
    BadHardwareId,
    BadRepositoryMapping,
    FreezeAttack,
    RepeatedEcuId,
    RollbackAttack,
    TargetMismatch,
    TargetNotFound,
    VehicleMismatch,
)
from uptane.keys import PrivateKey
from uptane.limits import PRIMARY
from uptane.metadata import JSON, DelegatedRole, MapFile, Mapping, TargetFile
from uptane.repository import RepositoryBuilder
from uptane.trust import RepositoryTrust
from uptane.verify import (
    NO_NEW_TARGETS,
    FullVerificationResult,
    VehicleContext,
    check_director_image_match,
    check_hardware_id,
    check_map_file,
    full_verification,
    mapping_rules_for,
    verify_image_bytes,
)

BRAKE_FW = b"brake firmware v5 " * 100


def _pair(**image_fields: object) -> tuple[TargetFile, TargetFile]:
    director = TargetFile.from_data(
        "brake/fw-5.bin",
        BRAKE_FW,
        ("sha256", "sha512"),
        hardware_ids=["brake-v2"],
        release_counter=5,
        ecu_ids={"ecu-brake": "brake-v2"},
    )
    image = TargetFile.from_data(
        "brake/fw-5.bin", BRAKE_FW, ("sha256", "sha512"), hardware_ids=["brake-v2"]
    )
    for k, v in image_fields.items():
        setattr(image, k, v)
    return director, image


# --- §5.2.6 the map file --------------------------------------------------------------


def test_5_2_6_default_map_file_is_accepted_and_maps_every_path():
    m = MapFile.default()
    check_map_file(m, ("director", "image"), ("director", "image"))
    assert mapping_rules_for(m, "brake/fw-5.bin") == m.mapping
    assert mapping_rules_for(m, "x") == m.mapping


def test_5_2_6_rules_are_taken_in_order_up_to_the_first_terminating_one():
    m = MapFile(
        {"director": [""], "image": [""]},
        [
            Mapping(["infotainment/*"], ["director"], 1, False),
            Mapping(["brake/*"], ["director", "image"], 2, True),
            Mapping(["*"], ["director", "image"], 2, True),
            Mapping(["*"], ["director"], 1, True),
        ],
    )
    assert mapping_rules_for(m, "brake/fw.bin") == [m.mapping[1]]
    assert mapping_rules_for(m, "infotainment/a/b.bin") == [m.mapping[0], m.mapping[2]]
    assert mapping_rules_for(m, "engine.bin") == [m.mapping[2]]
    assert mapping_rules_for(MapFile(m.repositories, m.mapping[:2]), "engine.bin") == []


TWO = ("director", "image")


@pytest.mark.parametrize(
    "rule, trusted, sources",
    [
        # a repository the map file does not define
        (Mapping(["*"], ["director", "other"], 2), TWO, TWO),
        # a repository defined but with no trusted metadata on this ECU
        (Mapping(["*"], ["director", "third"], 2), TWO, (*TWO, "third")),
        # a trusted repository with no source to download from
        (Mapping(["*"], ["director", "image"], 2), TWO, ("director",)),
        (Mapping(["*"], ["director", "image"], 3), TWO, TWO),
        (Mapping(["*"], ["director", "image"], 0), TWO, TWO),
        (Mapping([], ["director", "image"], 2), TWO, TWO),
        (Mapping(["*"], [], 1), TWO, TWO),
        (Mapping(["*"], ["director", "director"], 2), TWO, TWO),
    ],
)
def test_5_2_6_map_file_naming_unknown_or_unreachable_repositories_is_refused(
    rule, trusted, sources
):
    repos = {"director": [""], "image": [""], "third": [""]}
    with pytest.raises(BadRepositoryMapping):
        check_map_file(MapFile(repos, [rule]), trusted, sources)


def test_5_2_6_empty_map_file_is_refused():
    with pytest.raises(BadRepositoryMapping):
        check_map_file(MapFile({"director": [""]}, []), ("director",), ("director",))


# --- §5.4.4.2 step 10.2: Director and Image repository entries match -------------------


def test_5_4_4_2_matching_entries_pass():
    director, image = _pair()
    check_director_image_match(director, image)
    image.hashes = {a: h.upper() for a, h in image.hashes.items()}
    check_director_image_match(director, image)


def test_5_4_4_2_length_mismatch_is_target_mismatch():
    director, image = _pair(length=len(BRAKE_FW) + 1)
    with pytest.raises(TargetMismatch, match="bytes"):
        check_director_image_match(director, image)


@pytest.mark.parametrize("alg", ["sha256", "sha512"])
def test_5_4_4_2_any_hash_mismatch_is_target_mismatch(alg):
    director, image = _pair()
    image.hashes[alg] = "ab" * (len(image.hashes[alg]) // 2)
    with pytest.raises(TargetMismatch, match=alg):
        check_director_image_match(director, image)


def test_5_4_4_2_different_hash_algorithms_are_a_mismatch():
    director, image = _pair()
    del image.hashes["sha512"]
    with pytest.raises(TargetMismatch, match="sha512"):
        check_director_image_match(director, image)


@pytest.mark.parametrize(
    "director_sm, image_sm",
    [
        ({"releaseCounter": 5}, {"releaseCounter": 4}),
        ({"releaseCounter": 5}, None),
        (None, {"releaseCounter": 5}),
        ({"a": 1}, {"a": 1, "b": 2}),
        ({}, None),
    ],
)
def test_5_4_4_2_shall_match_sections_differing_is_target_mismatch(director_sm, image_sm):
    director, image = _pair(shall_match=image_sm)
    director.shall_match = director_sm
    with pytest.raises(TargetMismatch, match="SHALL-match"):
        check_director_image_match(director, image)


def test_5_4_4_2_equal_shall_match_sections_pass_and_other_custom_fields_may_differ():
    director, image = _pair(shall_match={"releaseCounter": 5, "variant": ["eu", "us"]})
    director.shall_match = {"variant": ["eu", "us"], "releaseCounter": 5}
    image.custom_extra = {"supplierNote": "built on line 3"}
    check_director_image_match(director, image)


def test_5_4_3_4_hardware_id_listed_on_an_entry_must_include_this_ecus():
    _, image = _pair()
    check_hardware_id(image, "brake-v2", repository="image")
    with pytest.raises(BadHardwareId):
        check_hardware_id(image, "engine-v1", repository="image")
    image.hardware_ids = []
    check_hardware_id(image, "engine-v1", repository="image")  # no list: nothing to check


# --- end to end: two repositories built with RepositoryBuilder -------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
VIN = "VIN-TEST-0001"
ROLES = ("root", "targets", "snapshot", "timestamp")
ENGINE_FW = b"engine firmware v3 " * 150
EVIL_FW = b"malware " * 200


class World:
    """An Image repository (brake images delegated to a supplier restricted by path and
    hardware id; engine images on the top-level targets), a Director for one vehicle with a
    Primary and two Secondaries, and the Primary's trusted state."""

    def __init__(self) -> None:
        keys = {f"{repo}-{r}": PrivateKey.generate() for repo in ("d", "i") for r in ROLES}
        self.supplier = PrivateKey.generate()
        self.image = RepositoryBuilder(
            "image", {r: [keys[f"i-{r}"]] for r in ROLES}, NOW, encodings=(JSON,)
        )
        self.image.delegate(
            "targets",
            DelegatedRole(
                "acme-brakes", [], 1, terminating=True, paths=["brake/*"], hardware_ids=["brake-v2"]
            ),
            [self.supplier],
        )
        self.brake = TargetFile.from_data(
            "brake/fw-5.bin",
            BRAKE_FW,
            ("sha256", "sha512"),
            hardware_ids=["brake-v2"],
            release_counter=5,
        )
        self.engine = TargetFile.from_data(
            "engine/fw-3.bin",
            ENGINE_FW,
            ("sha256", "sha512"),
            hardware_ids=["engine-v1"],
            release_counter=3,
        )
        self.image.add_target(copy.deepcopy(self.brake), "acme-brakes")
        self.image.add_target(copy.deepcopy(self.engine))
        self.image.publish(NOW)

        self.director = RepositoryBuilder(
            "director",
            {r: [keys[f"d-{r}"]] for r in ROLES},
            NOW,
            vehicle_id=VIN,
            encodings=(JSON,),
        )
        self.director.add_target(self.assign(self.brake, "ecu-brake", "brake-v2"))
        self.director.add_target(self.assign(self.engine, "ecu-engine", "engine-v1"))
        self.director.publish(NOW)

        self.vehicle = VehicleContext(
            VIN,
            "ecu-primary",
            {"ecu-primary": "gateway-v1", "ecu-brake": "brake-v2", "ecu-engine": "engine-v1"},
            {"ecu-brake": 4, "ecu-engine": 3},
        )
        self.director_trust = RepositoryTrust(
            "director",
            self.director.trusted_root(JSON),
            PRIMARY,
            vehicle_id=VIN,
            ecu_ids=list(self.vehicle.ecus),
        )
        self.image_trust = RepositoryTrust("image", self.image.trusted_root(JSON), PRIMARY)
        self.sources = {"director": self.director.source(JSON), "image": self.image.source(JSON)}

    @staticmethod
    def assign(src: TargetFile, ecu_id: str, hardware_id: str, **changes: object) -> TargetFile:
        """The Director's entry giving ``src`` to ``ecu_id``."""
        entry = TargetFile(
            src.path,
            src.length,
            dict(src.hashes),
            hardware_ids=[hardware_id],
            release_counter=src.release_counter,
            ecu_ids={ecu_id: hardware_id},
        )
        for k, v in changes.items():
            setattr(entry, k, v)
        return entry

    def reassign(self, *entries: TargetFile) -> None:
        """The Director publishes new targets for this vehicle: exactly ``entries``."""
        self.director.clear_targets()
        for e in entries:
            self.director.add_target(e)
        self.director.publish(NOW)

    def run(self, map_file: MapFile | None = None, now: datetime = NOW) -> FullVerificationResult:
        return full_verification(
            self.director_trust,
            self.image_trust,
            map_file or MapFile.default(),
            self.sources,
            now,
            self.vehicle,
            PRIMARY,
        )

    def run_for(self, ecu_id: str) -> FullVerificationResult:
        return full_verification(
            self.director_trust,
            self.image_trust,
            MapFile.default(),
            self.sources,
            NOW,
            self.vehicle,
            PRIMARY,
            only_ecu=ecu_id,
        )


@pytest.fixture
def world() -> World:
    return World()


def _approved(result: FullVerificationResult) -> dict[str, str]:
    return {a.ecu_id: a.path for a in result.images}


def test_5_4_4_2_two_ecus_approved_across_director_and_delegated_image_repository(world):
    result = world.run()
    assert result.stopped_early is None
    assert _approved(result) == {"ecu-brake": "brake/fw-5.bin", "ecu-engine": "engine/fw-3.bin"}
    brake = result.for_ecu("ecu-brake")
    assert brake is not None and brake.image_target is not None
    assert brake.hardware_id == "brake-v2"
    assert brake.length == len(BRAKE_FW) and brake.hashes == world.brake.hashes
    assert brake.image_target.hashes == world.brake.hashes
    assert brake.release_counter == 5
    assert result.for_ecu("ecu-primary") is None
    # the approved entry checks the real bytes, and only them
    verify_image_bytes(brake.director_target, BRAKE_FW, PRIMARY)
    v = result.for_ecu("ecu-engine").verifier(PRIMARY)  # type: ignore[union-attr]
    v.update(ENGINE_FW)
    v.finish()
    # the supplier's delegated role was consulted for the brake image
    assert any("acme-brakes" in r for r in world.sources["image"].requests)


def test_5_4_4_2_director_hash_differing_from_image_repository_is_target_mismatch(world):
    bad = dict(world.brake.hashes, sha512=hashlib.sha512(EVIL_FW).hexdigest())
    world.reassign(world.assign(world.brake, "ecu-brake", "brake-v2", hashes=bad))
    with pytest.raises(TargetMismatch, match="sha512") as e:
        world.run()
    assert e.value.repository == "image"


def test_5_4_4_2_director_length_differing_from_image_repository_is_target_mismatch(world):
    world.reassign(world.assign(world.brake, "ecu-brake", "brake-v2", length=len(BRAKE_FW) + 1))
    with pytest.raises(TargetMismatch, match="bytes"):
        world.run()


def test_5_4_4_2_image_missing_from_image_repository_is_target_not_found(world):
    missing = TargetFile.from_data(
        "brake/fw-6.bin", BRAKE_FW + b"6", hardware_ids=["brake-v2"], release_counter=6
    )
    world.reassign(world.assign(missing, "ecu-brake", "brake-v2"))
    with pytest.raises(TargetNotFound):
        world.run()


def test_5_4_4_2_director_compromised_alone_cannot_install_an_arbitrary_image(world):
    """The attacker holds every Director key and signs malware for this vehicle."""
    evil = TargetFile.from_data(
        "brake/evil.bin", EVIL_FW, hardware_ids=["brake-v2"], release_counter=99
    )
    world.reassign(world.assign(evil, "ecu-brake", "brake-v2"))
    with pytest.raises(TargetNotFound):
        world.run()
    # the same attack under the real image's name is a mismatch
    evil.path = "brake/fw-5.bin"
    world.reassign(world.assign(evil, "ecu-brake", "brake-v2"))
    with pytest.raises(TargetMismatch):
        world.run()


def test_5_4_4_2_image_repository_compromised_alone_cannot_install_an_unassigned_image(world):
    """The attacker holds the Image repository's and the supplier's keys: it can list
    malware, and even rewrite a listed image's entry, but the Director does not name it."""
    for path, role in (("brake/evil.bin", "acme-brakes"), ("engine/evil.bin", "targets")):
        hw = "brake-v2" if path.startswith("brake") else "engine-v1"
        world.image.add_target(
            TargetFile.from_data(path, EVIL_FW, hardware_ids=[hw], release_counter=99), role
        )
    world.image.publish(NOW)
    result = world.run()
    assert _approved(result) == {"ecu-brake": "brake/fw-5.bin", "ecu-engine": "engine/fw-3.bin"}
    assert all("evil" not in a.path for a in result.images)

    # rewriting the entry the Director does name makes the two disagree
    world.image.add_target(
        TargetFile.from_data("engine/fw-3.bin", EVIL_FW, hardware_ids=["engine-v1"]),
    )
    world.image.publish(NOW)
    world.reassign(
        world.assign(world.brake, "ecu-brake", "brake-v2"),
        world.assign(world.engine, "ecu-engine", "engine-v1", custom_extra={"cycle": 2}),
    )
    with pytest.raises(TargetMismatch):
        world.run()


def test_5_4_4_2_shall_match_section_differing_is_target_mismatch(world):
    world.reassign(
        world.assign(world.brake, "ecu-brake", "brake-v2", shall_match={"variant": "eu"})
    )
    with pytest.raises(TargetMismatch, match="SHALL-match"):
        world.run()


def test_5_4_4_2_equal_shall_match_sections_pass(world):
    world.image.add_target(
        TargetFile.from_data(
            "brake/fw-5.bin",
            BRAKE_FW,
            ("sha256", "sha512"),
            hardware_ids=["brake-v2"],
            release_counter=5,
            shall_match={"variant": "eu"},
        ),
        "acme-brakes",
    )
    world.image.publish(NOW)
    world.reassign(
        world.assign(world.brake, "ecu-brake", "brake-v2", shall_match={"variant": "eu"})
    )
    assert _approved(world.run()) == {"ecu-brake": "brake/fw-5.bin"}


def test_5_4_4_2_release_counter_below_installed_is_rollback(world):
    world.vehicle.installed_release_counters["ecu-brake"] = 6
    with pytest.raises(RollbackAttack) as e:
        world.run()
    assert e.value.repository == "director"


def test_5_4_4_2_director_claiming_higher_release_counter_than_image_repo_is_rollback(world):
    """An old image (counter 5 on the Image repository) dressed up by the Director as 7."""
    world.vehicle.installed_release_counters["ecu-brake"] = 6
    world.reassign(world.assign(world.brake, "ecu-brake", "brake-v2", release_counter=7))
    with pytest.raises(RollbackAttack) as e:
        world.run()
    assert e.value.repository == "image"


def test_5_4_3_4_director_entry_with_wrong_hardware_id_for_the_ecu_is_bad_hardware_id(world):
    world.reassign(
        world.assign(world.brake, "ecu-brake", "engine-v1", ecu_ids={"ecu-brake": "engine-v1"})
    )
    with pytest.raises(BadHardwareId) as e:
        world.run()
    assert e.value.repository == "director"


def test_5_4_3_4_image_for_other_hardware_is_bad_hardware_id(world):
    """The Director gives the engine image to the brake ECU; the Image repository's entry
    says it is for engine-v1 hardware."""
    world.vehicle.installed_release_counters.pop("ecu-brake")
    world.reassign(world.assign(world.engine, "ecu-brake", "brake-v2"))
    with pytest.raises(BadHardwareId) as e:
        world.run()
    assert e.value.repository == "image"


def test_5_4_4_7_delegation_hardware_id_limits_what_the_director_can_assign(world):
    """The brake supplier may sign only for brake-v2 hardware: its image cannot be found
    for an engine ECU, whatever the Director claims."""
    world.reassign(world.assign(world.brake, "ecu-engine", "engine-v1"))
    with pytest.raises(TargetNotFound):
        world.run()


def test_5_4_4_6_ecu_id_not_in_this_vehicle_is_bad_ecu_id(world):
    world.reassign(world.assign(world.brake, "ecu-stranger", "brake-v2"))
    with pytest.raises(BadEcuId):
        world.run()


def test_5_2_6_target_no_map_rule_covers_is_bad_repository_mapping(world):
    only_engine = MapFile(
        {"director": [""], "image": [""]}, [Mapping(["engine/*"], ["director", "image"], 2)]
    )
    with pytest.raises(BadRepositoryMapping, match=r"brake/fw-5\.bin"):
        world.run(only_engine)


def test_5_2_6_map_file_is_checked_before_any_download(world):
    bad = MapFile({"director": [""], "mirror": [""]}, [Mapping(["*"], ["director", "mirror"], 2)])
    with pytest.raises(BadRepositoryMapping):
        world.run(bad)
    assert world.sources["director"].requests == []
    assert world.sources["image"].requests == []


def test_5_2_6_terminating_rule_that_fails_refuses_even_if_a_later_rule_would_pass(world):
    rules = [
        Mapping(["brake/*"], ["director", "image"], 2, terminating=True),
        Mapping(["*"], ["director"], 1, terminating=True),
    ]
    missing = TargetFile.from_data(
        "brake/fw-6.bin", b"6", hardware_ids=["brake-v2"], release_counter=6
    )
    world.reassign(world.assign(missing, "ecu-brake", "brake-v2"))
    with pytest.raises(TargetNotFound):
        world.run(MapFile({"director": [""], "image": [""]}, rules))


def test_5_2_6_non_terminating_rule_that_fails_falls_through_to_the_next(world):
    rules = [
        Mapping(["brake/*"], ["director", "image"], 2, terminating=False),
        Mapping(["*"], ["director"], 1, terminating=True),
    ]
    missing = TargetFile.from_data(
        "brake/fw-6.bin", b"6", hardware_ids=["brake-v2"], release_counter=6
    )
    world.reassign(world.assign(missing, "ecu-brake", "brake-v2"))
    result = world.run(MapFile({"director": [""], "image": [""]}, rules))
    approved = result.for_ecu("ecu-brake")
    assert approved is not None and approved.image_target is None
    assert approved.rule is rules[1]


def test_5_2_6_director_only_map_does_not_consult_the_image_repository(world):
    director_only = MapFile({"director": [""]}, [Mapping(["*"], ["director"], 1)])
    result = world.run(director_only)
    assert len(result.images) == 2 and result.image is None
    assert world.sources["image"].requests == []


def test_5_4_4_2_unchanged_director_snapshot_stops_early_with_nothing_approved(world):
    assert len(world.run().images) == 2
    image_requests = len(world.sources["image"].requests)
    world.director.refresh_timestamp(NOW)  # a new timestamp, the same snapshot
    result = world.run()
    assert result.images == [] and result.stopped_early
    assert result.image is None
    assert len(world.sources["image"].requests) == image_requests  # not contacted


def test_5_4_4_2_no_new_targets_stops_before_the_image_repository(world):
    world.vehicle.installed_images = {
        "ecu-brake": world.director.targets.targets["brake/fw-5.bin"],
        "ecu-engine": world.director.targets.targets["engine/fw-3.bin"],
    }
    result = world.run()
    assert result.images == [] and result.stopped_early == NO_NEW_TARGETS
    assert world.sources["image"].requests == []


def test_5_4_4_2_empty_director_targets_is_nothing_new(world):
    world.reassign()
    result = world.run()
    assert result.images == [] and result.stopped_early == NO_NEW_TARGETS


def test_5_4_4_2_one_new_image_among_installed_ones_is_verified(world):
    world.vehicle.installed_images = {
        "ecu-brake": world.director.targets.targets["brake/fw-5.bin"],
    }
    assert _approved(world.run())["ecu-engine"] == "engine/fw-3.bin"


def test_5_4_4_2_unchanged_image_snapshot_still_matches_against_trusted_targets(world):
    world.run()
    world.reassign(world.assign(world.brake, "ecu-brake", "brake-v2"))
    result = world.run()
    assert result.image is not None and result.image.stopped_early
    assert _approved(result) == {"ecu-brake": "brake/fw-5.bin"}


def test_5_4_4_2_expired_director_metadata_is_a_freeze_attack(world):
    with pytest.raises(FreezeAttack):
        world.run(now=NOW + timedelta(days=2))


def test_5_4_4_2_current_time_must_be_timezone_aware(world):
    with pytest.raises(TypeError):
        world.run(now=NOW.replace(tzinfo=None))


def test_5_2_3_1_director_targets_for_another_vehicle_is_refused(world):
    world.director.targets.vehicle_id = "VIN-SOMEONE-ELSE"
    world.director.mark("targets")
    world.director.publish(NOW)
    with pytest.raises(VehicleMismatch):
        world.run()


def test_director_trust_set_up_for_another_vehicle_is_a_usage_error(world):
    world.vehicle.vehicle_id = "VIN-OTHER"
    with pytest.raises(ValueError):
        world.run()


def test_5_2_3_1_director_entry_naming_no_ecu_is_bad_ecu_id(world):
    world.reassign(
        world.assign(world.brake, "ecu-brake", "brake-v2"),
        world.assign(world.engine, "ecu-engine", "engine-v1", ecu_ids={}),
    )
    with pytest.raises(BadEcuId, match="names no ECU"):
        world.run()


def test_5_4_4_6_one_ecu_in_two_director_entries_is_refused(world):
    world.reassign(
        world.assign(world.brake, "ecu-brake", "brake-v2"),
        world.assign(world.engine, "ecu-brake", "brake-v2"),
    )
    with pytest.raises(RepeatedEcuId):
        world.run()


def test_5_4_4_2_one_image_for_two_ecus_of_the_same_kind_is_approved_for_each(world):
    world.vehicle.ecus["ecu-brake-rear"] = "brake-v2"
    world.director_trust = RepositoryTrust(
        "director",
        world.director.trusted_root(JSON),
        PRIMARY,
        vehicle_id=VIN,
        ecu_ids=list(world.vehicle.ecus),
    )
    both = world.assign(world.brake, "ecu-brake", "brake-v2")
    both.ecu_ids["ecu-brake-rear"] = "brake-v2"
    world.reassign(both)
    result = world.run()
    assert _approved(result) == {"ecu-brake": "brake/fw-5.bin", "ecu-brake-rear": "brake/fw-5.bin"}
    assert all(a.image_target is not None for a in result.images)


def _secondary_world(world: World) -> None:
    """The brake ECU as a full-verification Secondary: it knows the vehicle id and itself."""
    world.vehicle.ecus = {"ecu-brake": "brake-v2"}
    world.director_trust = RepositoryTrust(
        "director", world.director.trusted_root(JSON), PRIMARY, vehicle_id=VIN
    )


def test_5_4_4_2_secondary_may_check_only_its_own_image(world):
    _secondary_world(world)
    missing = TargetFile.from_data(
        "engine/fw-4.bin", b"not on the image repo", hardware_ids=["engine-v1"]
    )
    world.reassign(
        world.assign(world.brake, "ecu-brake", "brake-v2"),
        world.assign(missing, "ecu-engine", "engine-v1"),
    )
    result = world.run_for("ecu-brake")
    # the engine image is missing from the Image repository: that is the engine ECU's
    # (and the Primary's) refusal to make, not this Secondary's
    assert _approved(result) == {"ecu-brake": "brake/fw-5.bin"}


def test_5_4_4_2_secondary_own_image_mismatch_is_still_refused(world):
    _secondary_world(world)
    world.reassign(world.assign(world.brake, "ecu-brake", "brake-v2", length=1))
    with pytest.raises(TargetMismatch):
        world.run_for("ecu-brake")


def test_5_4_4_2_secondary_with_nothing_assigned_has_nothing_new(world):
    _secondary_world(world)
    world.reassign(world.assign(world.engine, "ecu-engine", "engine-v1"))
    result = world.run_for("ecu-brake")
    assert result.images == [] and result.stopped_early == NO_NEW_TARGETS


def test_primary_needs_the_director_trust_to_know_every_ecu(world):
    _secondary_world(world)
    with pytest.raises(ValueError):
        world.run()
