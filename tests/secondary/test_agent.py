"""The Secondary agent in one process: provisioning, a partial-verification update through
the real link endpoint (LinkClient over a loopback), signed version reports, time,
resume, trial boots and streaming memory."""

from __future__ import annotations

import json
import stat
import tracemalloc
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
    later,
    open_agent,
    provision_ecu,
)

from hardware import bench
from hardware.messages import Ack, PutImage
from hardware.progress import format_line
from secondary.cli import main as secondary_main
from secondary.cli import provision
from secondary.config import ConfigError, SecondaryConfig
from uptane.codec import COMPACT_DER
from uptane.errors import MalformedInput, ProtocolViolation, TargetNotFound
from uptane.keys import Key
from uptane.limits import PRIMARY
from uptane.manifest import check_report, decode_report
from uptane.metadata import DER, JSON
from uptane.trust import peek_version


def public_key(cfg: SecondaryConfig) -> Key:
    doc = json.loads((cfg.key_file.parent / "ecu_key.pub.json").read_text())
    return Key.from_dict(doc["public_key"], PRIMARY)


def test_5_4_1_provision_writes_key_root_state_and_config(tmp_path: Path, capsys) -> None:
    director = Director()
    (tmp_path / "root.der").write_bytes(director.root)
    rc = secondary_main(
        [
            "provision",
            "--dir",
            str(tmp_path / "ecu"),
            "--ecu-serial",
            ECU,
            "--hardware-id",
            HW,
            "--director-root",
            str(tmp_path / "root.der"),
            "--vehicle-id",
            VIN,
            "--slot-size",
            "65536",
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ecu_serial"] == ECU and printed["hardware_id"] == HW
    cfg = SecondaryConfig.load(tmp_path / "ecu" / "secondary.toml")
    assert (cfg.ecu_serial, cfg.hardware_id, cfg.vehicle_id) == (ECU, HW, VIN)
    assert cfg.encoding == DER and cfg.mode == "partial" and cfg.limits_profile == "constrained"
    assert stat.S_IMODE(cfg.key_file.stat().st_mode) == 0o600
    assert public_key(cfg).keyid == printed["keyid"]
    agent = open_agent(cfg)
    assert agent.hello_info().ecu_serial == ECU
    assert agent.slots.status().installed is None
    # a blank ECU reports, truly, that it runs nothing (an empty image), signed
    report = decode_report(agent.report(b"first"), PRIMARY, DER)
    body = check_report(report, public_key(cfg), expected_ecu_id=ECU, expected_nonce=b"first")
    assert (body.installed.filename, body.installed.length) == ("", 0)
    assert body.release_counter is None and body.attack is None
    # provisioning twice is refused unless forced
    args = ["provision", "--dir", str(tmp_path / "ecu"), "--ecu-serial", ECU, "--hardware-id"]
    again = secondary_main([*args, HW, "--director-root", str(tmp_path / "root.der")])
    assert again == 2


def test_provision_refuses_targets_not_signed_by_the_root(tmp_path: Path) -> None:
    director, other = Director(), Director()
    other.assign(b"x" * 10, "fw.bin")
    from secondary.cli import provision

    with pytest.raises(ConfigError):
        provision(
            tmp_path / "ecu",
            ecu_serial=ECU,
            hardware_id=HW,
            director_root=director.root,
            targets=other.targets,
        )
    assert not (tmp_path / "ecu" / "secondary.toml").exists()


def update(agent, director: Director, image: bytes, path: str, *, now=NOW, client=None):
    client = client or client_for(agent)
    client.put_time(int(now.timestamp()))
    client.put_metadata("targets", DER, director.targets)
    client.put_image(path, image, len(image))
    return client.install(path)


def test_5_4_4_1_partial_update_installs_and_reports_truly(tmp_path: Path) -> None:
    director = Director()
    cfg = provision_ecu(tmp_path, director)
    agent = open_agent(cfg)
    image = image_bytes("v1", 20_000)
    director.assign(image, "brake/v1.bin", release_counter=1)
    status = update(agent, director, image, "brake/v1.bin", now=later(1))
    assert status.installed == "brake/v1.bin" and status.state == "idle"
    st = agent.slots.status()
    assert st.trial is None and st.active == "B" and st.release_counter == 1
    assert agent.flash.read("B", 0, len(image)) == image
    assert agent.trusted_targets == director.targets

    nonce = b"nonce-0123456789"
    report = decode_report(client_for(agent).get_report(nonce), PRIMARY, DER)
    body = check_report(report, public_key(cfg), expected_ecu_id=ECU, expected_nonce=nonce)
    assert body.installed.filename == "brake/v1.bin" and body.installed.length == len(image)
    assert (
        body.installed.hashes["sha256"]
        == director.builder.targets.targets["brake/v1.bin"].hashes["sha256"]
    )
    assert body.release_counter == 1 and body.attack is None
    assert body.latest_time == later(1)
    assert body.unrecognized["install_result"]["outcome"] == "confirmed"

    # a second update replaces it, into the other slot
    image2 = image_bytes("v2", 30_000)
    director.assign(image2, "brake/v2.bin", release_counter=2)
    status = update(agent, director, image2, "brake/v2.bin", now=later(2))
    assert status.installed == "brake/v2.bin"
    assert agent.slots.status().active == "A"
    assert agent.flash.read("A", 0, len(image2)) == image2

    # and after a power cycle the ECU still runs it and says so
    agent2 = open_agent(SecondaryConfig.load(cfg.path))
    body = decode_report(agent2.report(b"n2"), PRIMARY, DER).signed
    assert body.installed.filename == "brake/v2.bin" and body.release_counter == 2
    assert body.latest_time == later(2)


def test_a_compact_der_ecu_is_provisioned_says_so_in_welcome_and_updates(
    tmp_path: Path,
) -> None:
    """``provision --encoding compact-der`` (compact-der is never guessed from the root's
    first byte: without it the root reads as standard DER and is refused); the ECU lists
    compact-der in WELCOME, takes compact-der metadata and reports in compact-der."""
    director = Director(encodings=(JSON, DER, COMPACT_DER))
    root = tmp_path / "root.cder"
    root.write_bytes(director.builder.trusted_root(COMPACT_DER))
    args = ["provision", "--dir", str(tmp_path / "ecu"), "--ecu-serial", ECU]
    args += ["--hardware-id", HW, "--director-root", str(root), "--vehicle-id", VIN]
    args += ["--slot-size", str(64 * 1024)]
    assert secondary_main(args) == 2  # read as standard DER: not a root
    assert secondary_main([*args, "--encoding", COMPACT_DER]) == 0
    cfg = SecondaryConfig.load(tmp_path / "ecu" / "secondary.toml")
    assert cfg.encoding == COMPACT_DER
    # again at the tests' clock (the command takes the real one)
    provision(
        tmp_path / "ecu",
        ecu_serial=ECU,
        hardware_id=HW,
        director_root=root.read_bytes(),
        vehicle_id=VIN,
        slot_size=64 * 1024,
        encoding=COMPACT_DER,
        now=NOW.timestamp(),
        force=True,
    )
    cfg = SecondaryConfig.load(tmp_path / "ecu" / "secondary.toml")
    assert cfg.encoding == COMPACT_DER
    agent = open_agent(cfg)
    image = image_bytes("compact", 12_000)
    director.assign(image, "brake/c1.bin", release_counter=1)
    with client_for(agent) as link:
        assert link.hello().codecs == (COMPACT_DER,)
        link.put_time(int(later(1).timestamp()))
        with pytest.raises(MalformedInput, match="reads compact-der"):
            link.put_metadata("targets", DER, director.targets)
        link.put_metadata("targets", COMPACT_DER, director.builder.files[COMPACT_DER]["targets"])
        link.put_image("brake/c1.bin", image, len(image))
        link.install("brake/c1.bin")
        raw = link.get_report(b"nonce-compact-01")
    body = decode_report(raw, PRIMARY, COMPACT_DER).signed
    assert body.installed.filename == "brake/c1.bin" and body.release_counter == 1


def test_director_targets_naming_nothing_new_are_trusted_at_once(tmp_path: Path) -> None:
    director = Director()
    cfg = provision_ecu(tmp_path, director)
    agent = open_agent(cfg)
    director.assign(b"other" * 10, "other.bin", ecu="ecu-other", hw="hw-x")
    client = client_for(agent)
    client.put_time(int(later(1).timestamp()))
    client.put_metadata("targets", DER, director.targets)
    assert agent.trusted_targets == director.targets
    with pytest.raises(TargetNotFound):
        client.put_image("nothing.bin", b"abc", 3)


def test_time_never_goes_backwards(tmp_path: Path) -> None:
    agent = open_agent(provision_ecu(tmp_path, Director()))
    client = client_for(agent)
    client.put_time(int(later(5).timestamp()))
    client.put_time(int(later(1).timestamp()))
    assert agent.latest_time == later(5)
    with pytest.raises(MalformedInput):
        client.put_time(2**62)  # would make every later expiry check fail forever
    client.put_time(b"2026-04-01T00:00:00Z")
    assert agent.latest_time.isoformat().startswith("2026-04-01")
    reopened = open_agent(SecondaryConfig.load(agent_cfg_path(tmp_path)))
    assert reopened.latest_time == agent.latest_time


def agent_cfg_path(tmp_path: Path) -> Path:
    return tmp_path / "ecu" / "secondary.toml"


def test_interrupted_image_transfer_resumes_at_the_acknowledged_offset(tmp_path: Path) -> None:
    director = Director()
    agent = open_agent(provision_ecu(tmp_path, director))
    image = image_bytes("resume", 40_000)
    director.assign(image, "fw.bin")
    client = client_for(agent)
    client.put_time(int(later(1).timestamp()))
    client.put_metadata("targets", DER, director.targets)

    class Cut(Exception):
        pass

    def cut(done: int, total: int) -> None:
        if done > 10_000:
            raise Cut

    with pytest.raises(Cut):
        client.put_image("fw.bin", image, len(image), progress=cut)
    acked = client.status().image_offset
    assert 10_000 < acked < len(image)
    sent: list[int] = []
    start = client.put_image("fw.bin", image, len(image), progress=lambda d, t: sent.append(d))
    assert start == acked and sent[0] > acked
    assert client.install("fw.bin").installed == "fw.bin"
    # a chunk at an offset that was never acknowledged is refused
    with pytest.raises(ProtocolViolation):
        client._call(PutImage(filename="fw.bin", total=len(image), offset=5, chunk=b"x"), Ack)


def test_trial_that_is_never_confirmed_reverts_and_the_report_says_so(tmp_path: Path) -> None:
    director = Director()
    cfg = provision_ecu(tmp_path, director)
    agent = open_agent(cfg, confirm="manual")
    v1 = image_bytes("v1", 5_000)
    director.assign(v1, "v1.bin", release_counter=1)
    update(agent, director, v1, "v1.bin", now=later(1))
    # manual confirm: the new slot runs on trial
    st = agent.slots.status()
    assert st.trial == "B" and st.booted == "B"
    agent.slots.confirm()
    v2 = image_bytes("v2", 6_000)
    director.assign(v2, "v2.bin", release_counter=2)
    update(agent, director, v2, "v2.bin", now=later(2))
    assert agent.slots.status().trial == "A"
    for _ in range(cfg.max_trial_boots):
        agent = open_agent(SecondaryConfig.load(cfg.path), confirm="manual")
    assert agent.slots.status().booted == "B"  # reverted to v1
    body = decode_report(agent.report(b"n"), PRIMARY, DER).signed
    assert body.installed.filename == "v1.bin" and body.release_counter == 1
    assert body.unrecognized["install_result"]["outcome"] == "reverted"
    assert body.unrecognized["install_result"]["attack"] == "install-failed"


def test_streaming_a_large_image_keeps_memory_near_one_chunk(tmp_path: Path) -> None:
    size = 4 * 1024 * 1024
    director = Director()
    agent = open_agent(provision_ecu(tmp_path, director, slot_size=size))
    image = image_bytes("big", size)
    director.assign(image, "big.bin")
    agent.put_time(int(later(1).timestamp()), None)
    agent.put_metadata("director", "targets", DER, director.targets)
    step = 4096
    tracemalloc.start()
    try:
        for off in range(0, size, step):
            agent.put_image_chunk("big.bin", size, off, image[off : off + step])
        agent.install("big.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert agent.slots.status().installed.filename == "big.bin"
    assert peak < 512 * 1024


def test_bench_install_and_info_through_the_loopback(tmp_path: Path) -> None:
    director = Director()
    agent = open_agent(provision_ecu(tmp_path, director))
    image = image_bytes("bench", 12_345)
    director.assign(image, "bench.bin", release_counter=3)
    (tmp_path / "bench.bin").write_bytes(image)
    files = bench.load_metadata(director.write_dir(tmp_path / "meta"))
    assert [f.role for f in files] == ["root", "targets"]
    lines: list[str] = []
    out = bench.install(
        client_for(agent),
        files,
        tmp_path / "bench.bin",
        now=int(later(1).timestamp()),
        progress=lambda d, t: lines.append(format_line("image", d, t, 1.0)),
    )
    assert out["installed"] == "bench.bin"
    assert out["signed"]["installed_image"]["filename"] == "bench.bin"
    assert out["signed"]["release_counter"] == 3
    assert lines[-1].startswith("image 100% [####################] 12.1kB/12.1kB")
    shown = bench.info(client_for(agent))
    assert shown["ecu_serial"] == ECU and shown["installed"] == "bench.bin"
    assert shown["slot"] == "B" and shown["slot_size"] == 64 * 1024
    assert shown["report"]["signed"]["ecu_id"] == ECU


def test_config_round_trip_and_refusals(tmp_path: Path) -> None:
    cfg = provision_ecu(tmp_path, Director(), port="/dev/ttyUSB3")
    text = cfg.path.read_text()
    assert 'port = "/dev/ttyUSB3"' in text and 'state_dir = "state"' in text
    again = SecondaryConfig.load(cfg.path)
    assert again.state_dir == cfg.state_dir and again.link.port == "/dev/ttyUSB3"
    assert again.limits == again.limits.constrained() and again.auto_confirm
    for bad in ('mode = "half"', 'confirm = "sometimes"', 'limits = "huge"'):
        key = bad.split(" ")[0]
        broken = "\n".join(
            bad if line.startswith(key + " ") else line for line in text.splitlines()
        )
        (tmp_path / "bad.toml").write_text(broken)
        with pytest.raises(ConfigError):
            SecondaryConfig.load(tmp_path / "bad.toml")
    (tmp_path / "bad.toml").write_text("[ecu]\nserial = 3\n")
    with pytest.raises(ConfigError):
        SecondaryConfig.load(tmp_path / "bad.toml")


def test_5_4_4_1_director_root_rotation_is_applied_before_the_targets(tmp_path: Path) -> None:
    from uptane.errors import ThresholdNotMet
    from uptane.keys import PrivateKey

    director = Director()
    cfg = provision_ecu(tmp_path, director)
    agent = open_agent(cfg)
    new_key = PrivateKey.generate()
    old = director.keys["targets"][0]
    director.builder.rotate_keys("targets", [new_key], revoke=[old.keyid])
    image = image_bytes("rotated", 5_000)
    director.assign(image, "fw.bin", release_counter=1)
    client = client_for(agent)
    client.put_time(int(later(1).timestamp()))
    # without the new root the new targets key is unknown: refused, nothing changes
    with pytest.raises(ThresholdNotMet):
        client.put_metadata("targets", DER, director.targets)
    files = bench.load_metadata(director.write_dir(tmp_path / "meta"))
    assert [(f.role, f.data[:0]) for f in files][:2] == [("root", b""), ("root", b"")]
    (tmp_path / "fw.bin").write_bytes(image)
    out = bench.install(client, files, tmp_path / "fw.bin", now=int(later(1).timestamp()))
    assert out["installed"] == "fw.bin"
    # the rotated root is what the ECU trusts now, also after a power cycle
    again = open_agent(SecondaryConfig.load(cfg.path))
    assert peek_version(again.trusted_root, PRIMARY, encoding=DER) == 2


def test_offline_for_months_recovers_on_the_next_cycle_without_a_manual_step(
    tmp_path: Path,
) -> None:
    director = Director()
    agent = open_agent(provision_ecu(tmp_path, director))
    v1 = image_bytes("v1", 4_000)
    director.assign(v1, "v1.bin", release_counter=1)
    update(agent, director, v1, "v1.bin", now=later(1))
    # 200 days offline: everything the ECU trusts has expired; the stale file is refused...
    from uptane.errors import ExpiredMetadata

    client = client_for(agent)
    client.put_time(int(later(200).timestamp()))
    with pytest.raises(ExpiredMetadata):
        client.put_metadata("targets", DER, director.targets)
    # ...and the Director's fresh metadata is taken on the next cycle
    v2 = image_bytes("v2", 4_500)
    director.assign(v2, "v2.bin", release_counter=2, now=later(199))
    assert update(agent, director, v2, "v2.bin", now=later(200)).installed == "v2.bin"


def test_partial_secondary_ignores_what_partial_verification_does_not_use(
    tmp_path: Path,
) -> None:
    director = Director()
    agent = open_agent(provision_ecu(tmp_path, director))
    client = client_for(agent)
    before = agent.trusted_targets
    files = director.builder.files[DER]
    client.put_metadata("timestamp", DER, files["timestamp"])
    client.put_metadata("snapshot", DER, files["snapshot"])
    client.put_metadata("targets", DER, b"not even metadata", repository="image")
    client.put_metadata("map", "json", b"{}", repository="director")
    assert agent.trusted_targets == before and agent.last_error == {}
