"""Shared fixtures for the core tests: in-memory repositories and a Director + Image
repository pair (helpers in ``trust_support.py``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from trust_support import VIN, Repo, director_entry, make_repo, make_two_repos

from uptane.metadata import TargetFile


@pytest.fixture
def repo_factory() -> Callable[..., Repo]:
    """``repo_factory(name="image", **options)``: see :func:`make_repo`."""
    return make_repo


@pytest.fixture
def image_repo() -> Repo:
    return make_repo("image", targets=[TargetFile.from_data("fw/a.bin", b"image a")])


@pytest.fixture
def director_repo() -> Repo:
    return make_repo(
        "director",
        vehicle_id=VIN,
        targets=[director_entry(b"image a", "fw/a.bin", "ecu-1", "hw-1", release_counter=1)],
    )


@pytest.fixture
def two_repos(director_repo: Repo, image_repo: Repo) -> tuple[Repo, Repo]:
    """A Director (for vehicle ``VIN``, ECU ``ecu-1`` of hardware ``hw-1``) and an Image
    repository that both list ``fw/a.bin``."""
    return director_repo, image_repo


@pytest.fixture
def two_repo_factory() -> Callable[..., tuple[Repo, Repo]]:
    """``two_repo_factory(images, assignments, vehicle_id=VIN, ...)``: a Director and an
    Image repository in agreement (see :func:`trust_support.make_two_repos`)."""
    return make_two_repos
