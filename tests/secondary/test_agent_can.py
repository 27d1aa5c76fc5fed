"""The Secondary agent over CAN (ISO-TP): in one process on python-can's ``virtual`` bus
(classic CAN and CAN FD), and across processes on ``udp_multicast`` inside a private
network namespace that the test creates (``unshare -n``), never on the host network."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_agent_support import ECU, HW, Director, image_bytes, provision_ecu

from hardware import bench
from hardware.client import LinkClient
from hardware.server import serve
from secondary.agent import SecondaryAgent
from secondary.cli import open_transport
from secondary.config import LinkConfig, SecondaryConfig
from uptane.errors import BadHash
from uptane.limits import PRIMARY

ROOT = Path(__file__).resolve().parents[2]
_channels = itertools.count()


def real_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def can_config(cfg: SecondaryConfig, interface: str, channel: str, fd: bool) -> SecondaryConfig:
    cfg.link = LinkConfig(
        type="can", interface=interface, channel=channel, rxid=0x7E0, txid=0x7E8, fd=fd
    )
    return cfg


@pytest.mark.parametrize("fd", [False, True], ids=["classic", "fd"])
def test_secondary_updated_over_can_virtual_bus(tmp_path: Path, fd: bool) -> None:
    now = real_now()
    director = Director(now - timedelta(hours=1))
    channel = f"uptane-sec-{os.getpid()}-{next(_channels)}"
    cfg = can_config(provision_ecu(tmp_path, director, now=now), "virtual", channel, fd)
    agent = SecondaryAgent.from_config(cfg)
    agent.start()
    server_link = open_transport(cfg)  # what `uptane-secondary run` opens for [link] can
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(server_link, agent.endpoint(max_frame=server_link.max_frame), stop)
    )
    thread.start()
    image = image_bytes("can-v1", 30_000)
    director.assign(image, "can/v1.bin", release_counter=4, now=now - timedelta(minutes=5))
    (tmp_path / "v1.bin").write_bytes(image)
    files = bench.load_metadata(director.write_dir(tmp_path / "meta"))
    client_link = bench.open_can("virtual", channel, txid=0x7E0, rxid=0x7E8, fd=fd)
    try:
        with LinkClient(client_link, PRIMARY, timeout=2.0, link_key=agent.link_key) as client:
            (tmp_path / "bad.bin").write_bytes(image[:-1] + b"!")
            with pytest.raises(BadHash):
                bench.install(client, files, tmp_path / "bad.bin", filename="can/v1.bin")
            assert agent.slots.status().installed is None
            out = bench.install(client, files, tmp_path / "v1.bin", filename="can/v1.bin")
            assert out["installed"] == "can/v1.bin"
            assert out["signed"]["release_counter"] == 4
            assert bench.info(client)["hardware_id"] == HW
    finally:
        stop.set()
        thread.join(10)
        server_link.close()
    st = agent.slots.status()
    assert st.installed.filename == "can/v1.bin"
    assert agent.flash.read(st.booted, 0, len(image)) == image


def _netns_available() -> bool:
    try:
        import msgpack  # noqa: F401  (python-can's udp_multicast needs it)
    except ImportError:
        return False
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up && ip route add 224.0.0.0/4 dev lo"],
        capture_output=True,
        timeout=10,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _netns_available(), reason="no private network namespace (or no msgpack for udp_multicast)"
)
def test_secondary_process_updated_over_udp_multicast_can_in_a_private_netns(
    tmp_path: Path,
) -> None:
    now = real_now()
    director = Director(now - timedelta(hours=1))
    channel = "239.74.163.2"
    cfg = can_config(provision_ecu(tmp_path, director, now=now), "udp_multicast", channel, False)
    cfg.path.write_text(cfg.to_toml())
    image = image_bytes("udp-v1", 20_000)
    director.assign(image, "udp/v1.bin", release_counter=1, now=now - timedelta(minutes=5))
    (tmp_path / "v1.bin").write_bytes(image)
    meta = director.write_dir(tmp_path / "meta")
    py = shlex.quote(sys.executable)
    secondary = f"{py} -m secondary run --config {shlex.quote(str(cfg.path))}"
    tool = (
        f"{py} -m hardware.bench --can-interface udp_multicast --port {channel} "
        f"--txid 0x7E0 --rxid 0x7E8 --link-key {shlex.quote(str(cfg.link_key_file))}"
    )
    script = f"""
set -e
ip link set lo up
ip link set lo multicast on
ip route add 224.0.0.0/4 dev lo
{secondary} > {tmp_path}/secondary.out 2> {tmp_path}/secondary.err &
SEC=$!
for i in $(seq 300); do grep -q ready {tmp_path}/secondary.out && break; sleep 0.1; done
rc=0
{tool} install --metadata {meta} --image {tmp_path}/v1.bin --name udp/v1.bin \\
    > {tmp_path}/install.json || rc=$?
kill -TERM $SEC
wait $SEC || rc=$?
exit $rc
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    err = (tmp_path / "secondary.err").read_text() if (tmp_path / "secondary.err").exists() else ""
    assert done.returncode == 0, done.stderr + err
    out = json.loads((tmp_path / "install.json").read_text())
    assert out["installed"] == "udp/v1.bin" and out["signed"]["ecu_id"] == ECU
    agent = SecondaryAgent.from_config(SecondaryConfig.load(cfg.path))
    agent.start()
    assert agent.slots.status().installed.filename == "udp/v1.bin"
