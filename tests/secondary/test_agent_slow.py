"""§5.4 slow retrieval at a Secondary: every ECU SHALL monitor its download speed, and a
Secondary downloads its image over the link from the Primary (a compromised Primary or a
man on the bus can drip it).

The agent feeds every PUT_IMAGE chunk to :class:`uptane.speed.SpeedMonitor`. Below the
floor the chunk is refused with SlowRetrievalAttack (the ERROR over the link names
``slow-retrieval``), nothing is installed, the next report carries the attack indicator,
and the partial is kept for a later transfer to resume. Pauses between update cycles are
not measured, and a link paced like a 115200-baud serial line passes the default floor.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from test_agent_support import (
    Director,
    Loopback,
    image_bytes,
    later,
    provision_ecu,
    snapshot,
)

from hardware.client import LinkClient
from secondary.agent import SecondaryAgent
from secondary.config import ConfigError, SecondaryConfig
from uptane.errors import SlowRetrievalAttack
from uptane.limits import PRIMARY, Limits
from uptane.manifest import decode_report
from uptane.metadata import DER

IMAGE = image_bytes("slow-v1", 40_000)
PATH = "fw/slow.bin"
CHUNK = 1024  # the client sends small chunks, so the drip is seen chunk by chunk


class Drip(io.BytesIO):
    """An image stream that hands out each read only after ``pause()``: the Primary side
    of a link that delivers slower (or faster) than the Secondary's floor."""

    def __init__(self, data: bytes, pause) -> None:
        super().__init__(data)
        self.pause = pause

    def read(self, n: int | None = -1) -> bytes:
        self.pause()
        return super().read(n)


def client(agent: SecondaryAgent) -> LinkClient:
    return LinkClient(
        Loopback(agent.endpoint()),
        PRIMARY.replace(chunk_size=CHUNK),
        timeout=5.0,
        retries=0,
        link_key=agent.link_key,
    )


def open_ecu(tmp_path: Path, director: Director, **link: float) -> SecondaryAgent:
    """A provisioned ECU whose ``[link]`` table sets ``link`` (written to and read back
    from its TOML file), powered on."""
    cfg = provision_ecu(tmp_path, director)
    for key, value in link.items():
        setattr(cfg.link, key, value)
    assert cfg.path is not None
    cfg.path.write_text(cfg.to_toml(), encoding="utf-8")
    agent = SecondaryAgent.from_config(SecondaryConfig.load(cfg.path))
    agent.start()
    return agent


def attack_in_report(agent: SecondaryAgent) -> str | None:
    body = decode_report(client(agent).get_report(b"nonce-after-slow"), PRIMARY, DER).signed
    return body.attack


def test_5_4_secondary_slow_link_drip_is_refused_nothing_installed_and_reported(
    tmp_path: Path,
) -> None:
    director = Director()
    # a small floor for the test: 200 kB/s over 0.25 s; the drip below stays far under it
    agent = open_ecu(tmp_path, director, min_bytes_per_second=200_000, speed_window=0.25)
    assert agent.limits.min_bytes_per_second == 200_000 and agent.limits.speed_window == 0.25
    director.assign(IMAGE, PATH, release_counter=1)
    before = snapshot(agent)
    link = client(agent)
    link.put_time(int(later(1).timestamp()))
    link.put_metadata("targets", DER, director.targets)

    # one 1 KiB chunk every 50 ms at most: about 20 kB/s, a tenth of the floor
    with pytest.raises(SlowRetrievalAttack, match="over the link") as e:
        link.put_image(PATH, Drip(IMAGE, lambda: time.sleep(0.05)), len(IMAGE))
    assert e.value.attack == "slow-retrieval"  # the ERROR over the link names the attack

    st = link.status()
    assert st.installed is None and 0 < st.image_offset < len(IMAGE)
    assert st.attack == SlowRetrievalAttack.code
    assert snapshot(agent) == before  # nothing installed, nothing newly trusted
    assert agent.last_error["attack"] == "slow-retrieval"
    indicator = attack_in_report(agent)
    assert indicator is not None and "slow-retrieval" in indicator


def test_5_4_secondary_slow_link_partial_kept_pause_between_cycles_not_measured(
    tmp_path: Path,
) -> None:
    """The default constrained floor (1 KiB/s over 10 s), with the agent's clock stepped
    by the test: a link paced like 115200 baud passes, a drip at 0.5 KiB/s is refused after
    one window, and after an hour's pause (the next cycle) the transfer resumes from the
    kept partial and installs the exact image."""
    director = Director()
    agent = open_ecu(tmp_path, director)
    assert agent.limits == Limits.constrained()
    clock = [1000.0]
    agent.clock = lambda: clock[0]

    def pace(bytes_per_second: float):
        def pause() -> None:
            clock[0] += CHUNK / bytes_per_second

        return pause

    director.assign(IMAGE, PATH, release_counter=1)
    link = client(agent)
    link.put_time(int(later(1).timestamp()))
    link.put_metadata("targets", DER, director.targets)

    # 115200 baud is about 11 KiB/s: well above the floor
    class Cut(Exception):
        pass

    def cut(done: int, total: int) -> None:
        if done >= 12 * CHUNK:
            raise Cut

    with pytest.raises(Cut):
        link.put_image(PATH, Drip(IMAGE, pace(11_250)), len(IMAGE), progress=cut)
    held = link.status().image_offset
    assert held == 12 * CHUNK

    # the next cycle, an hour later, drips at 512 B/s: refused once a window has passed
    clock[0] += 3600
    with pytest.raises(SlowRetrievalAttack):
        link.put_image(PATH, Drip(IMAGE, pace(512)), len(IMAGE))
    st = link.status()
    assert st.installed is None and held < st.image_offset < len(IMAGE)
    assert "slow-retrieval" in (attack_in_report(agent) or "")

    # and the one after resumes the kept partial at full pace and installs
    clock[0] += 3600
    start = link.put_image(PATH, Drip(IMAGE, pace(11_250)), len(IMAGE))
    assert start == st.image_offset
    assert link.install(PATH).installed == PATH
    info = agent.slots.status()
    assert info.installed is not None and info.installed.filename == PATH
    assert agent.flash.read(info.booted or info.active, 0, len(IMAGE)) == IMAGE
    assert attack_in_report(agent) is None  # a successful install clears the indicator


def test_slow_retrieval_link_settings_are_checked(tmp_path: Path) -> None:
    cfg = provision_ecu(tmp_path, Director())
    cfg.link.speed_window = -1.0
    with pytest.raises(ConfigError, match="speed_window"):
        cfg.check()
    assert cfg.path is not None
    text = cfg.path.read_text(encoding="utf-8")
    cfg.path.write_text(text.replace("[link]", '[link]\nmin_bytes_per_second = "fast"'))
    with pytest.raises(ConfigError, match="min_bytes_per_second"):
        SecondaryConfig.load(cfg.path)
