"""A full-verification Secondary (§5.4.4.2, configured with ``mode = "full"``): it gets
every role of both repositories (the bench tool's ``director/`` + ``image/`` layout) and
checks its own image against both; a compromised Director alone cannot install."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_agent_support import (
    ECU,
    HW,
    NOW,
    VIN,
    Director,
    client_for,
    image_bytes,
    snapshot,
)

from hardware import bench
from secondary.agent import SecondaryAgent
from secondary.cli import provision
from secondary.config import SecondaryConfig
from uptane.errors import TargetMismatch, TargetNotFound
from uptane.keys import PrivateKey
from uptane.metadata import DER, JSON, TargetFile
from uptane.repository import RepositoryBuilder


class ImageRepo:
    def __init__(self) -> None:
        keys = {r: [PrivateKey.generate()] for r in ("root", "targets", "snapshot", "timestamp")}
        self.builder = RepositoryBuilder(
            "image",
            dict(keys),  # type: ignore[arg-type]
            NOW,
            encodings=(JSON, DER),
        )

    def add(self, image: bytes, path: str, release_counter: int) -> None:
        self.builder.add_target(
            TargetFile.from_data(
                path,
                image,
                ("sha256", "sha512"),
                hardware_ids=[HW],
                release_counter=release_counter,
            )
        )
        self.builder.publish(NOW)


def write_repo(builder: RepositoryBuilder, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in builder.versioned_files(DER).items():
        (directory / name).write_bytes(data)


@pytest.fixture
def setup(tmp_path: Path):
    director, image_repo = Director(), ImageRepo()
    provision(
        tmp_path / "ecu",
        ecu_serial=ECU,
        hardware_id=HW,
        director_root=director.root,
        vehicle_id=VIN,
        mode="full",
        image_root=image_repo.builder.trusted_root(DER),
        slot_size=64 * 1024,
        now=NOW.timestamp(),
    )
    agent = SecondaryAgent.from_config(SecondaryConfig.load(tmp_path / "ecu" / "secondary.toml"))
    agent.start()
    assert agent.hello_info().mode == "full"
    return director, image_repo, agent


def send(tmp_path: Path, director: Director, image_repo: ImageRepo, agent, data: bytes, path: str):
    meta = tmp_path / "meta"
    write_repo(director.builder, meta / "director")
    write_repo(image_repo.builder, meta / "image")
    (tmp_path / "img.bin").write_bytes(data)
    files = bench.load_metadata(meta)
    assert files[-1].repository == "director" and files[-1].role == "targets"
    return bench.install(
        client_for(agent),
        files,
        tmp_path / "img.bin",
        now=int((NOW + timedelta(hours=1)).timestamp()),
        filename=path,
    )


def test_5_4_4_2_full_verification_secondary_installs_an_image_both_repos_agree_on(
    tmp_path: Path, setup
) -> None:
    director, image_repo, agent = setup
    v1 = image_bytes("full-v1", 10_000)
    image_repo.add(v1, "fw/v1.bin", 1)
    director.assign(v1, "fw/v1.bin", release_counter=1)
    out = send(tmp_path, director, image_repo, agent, v1, "fw/v1.bin")
    assert out["installed"] == "fw/v1.bin" and out["signed"]["release_counter"] == 1
    assert agent.flash.read(agent.slots.status().booted, 0, len(v1)) == v1


def test_5_4_4_2_a_compromised_director_alone_cannot_install(tmp_path: Path, setup) -> None:
    director, image_repo, agent = setup
    v1 = image_bytes("full-v1", 10_000)
    image_repo.add(v1, "fw/v1.bin", 1)
    director.assign(v1, "fw/v1.bin", release_counter=1)
    send(tmp_path, director, image_repo, agent, v1, "fw/v1.bin")
    before = snapshot(agent)
    evil = image_bytes("evil", 10_000)
    director.assign(evil, "fw/evil.bin", release_counter=9)
    with pytest.raises(TargetNotFound):
        send(tmp_path, director, image_repo, agent, evil, "fw/evil.bin")
    assert snapshot(agent) == before
    # the same file name with other bytes than the Image repository signed
    director.assign(evil, "fw/v1.bin", release_counter=9)
    with pytest.raises(TargetMismatch):
        send(tmp_path, director, image_repo, agent, evil, "fw/v1.bin")
    assert snapshot(agent) == before
    assert agent.last_error["attack"] == "arbitrary-software"


def test_full_verification_state_survives_a_power_cycle(tmp_path: Path, setup) -> None:
    director, image_repo, agent = setup
    v1, v2 = image_bytes("full-v1", 10_000), image_bytes("full-v2", 12_000)
    image_repo.add(v1, "fw/v1.bin", 1)
    director.assign(v1, "fw/v1.bin", release_counter=1)
    send(tmp_path, director, image_repo, agent, v1, "fw/v1.bin")
    cfg = SecondaryConfig.load(tmp_path / "ecu" / "secondary.toml")
    again = SecondaryAgent.from_config(cfg)
    again.start()
    assert again.trusted_targets == director.targets
    image_repo.add(v2, "fw/v2.bin", 2)
    director.assign(v2, "fw/v2.bin", release_counter=2)
    out = send(tmp_path, director, image_repo, again, v2, "fw/v2.bin")
    assert out["installed"] == "fw/v2.bin" and out["signed"]["release_counter"] == 2
