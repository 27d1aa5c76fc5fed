"""§5.4: every ECU SHALL monitor its download speed (slow retrieval, §4.3).

The check is :class:`uptane.speed.SpeedMonitor`; ``now`` is passed in, so these tests
drive it with exact times (no clock, no sleeping).
"""

from __future__ import annotations

import pytest

from uptane.errors import SlowRetrievalAttack
from uptane.speed import SpeedMonitor


def test_5_4_slow_retrieval_window_below_the_floor_is_refused() -> None:
    m = SpeedMonitor(100, 1.0, what="image x", start=0.0)
    m.update(10, 0.5)  # inside the first window: not judged yet
    m.update(90, 1.0)  # 100 B in 1 s: exactly the floor
    m.check(1.5)
    with pytest.raises(SlowRetrievalAttack, match="image x") as e:
        m.update(50, 2.5)  # 50 B in the second window of 1.5 s
    assert e.value.attack == "slow-retrieval"


def test_5_4_slow_retrieval_not_judged_before_the_first_full_window() -> None:
    m = SpeedMonitor(1000, 10.0, start=0.0)
    for t in range(1, 10):
        m.update(1, float(t))  # 9 B in 9 s: far below, but the window is not complete
    with pytest.raises(SlowRetrievalAttack):
        m.update(1, 10.0)


def test_5_4_slow_retrieval_a_silent_transfer_is_refused_by_check() -> None:
    m = SpeedMonitor(1, 2.0, start=5.0)
    m.check(6.0)
    with pytest.raises(SlowRetrievalAttack):
        m.check(7.0)  # nothing for a whole window


def test_5_4_slow_retrieval_stays_refused_until_reset() -> None:
    m = SpeedMonitor(100, 1.0, start=0.0)
    with pytest.raises(SlowRetrievalAttack):
        m.update(10, 1.0)
    with pytest.raises(SlowRetrievalAttack):
        m.update(10, 1.1)  # still the same slow window
    m.reset(2.0)
    m.update(10, 2.5)  # a fresh window, not judged yet
    m.update(200, 3.0)


def test_5_4_slow_retrieval_unstarted_monitor_starts_at_the_first_update() -> None:
    m = SpeedMonitor(100, 1.0)
    m.update(10, 1000.0)  # the window starts here, not at 0
    m.update(100, 1001.0)
    assert m.window_bytes == 0  # judged and passed: a new window


def test_5_4_slow_retrieval_idle_pause_is_not_measured() -> None:
    m = SpeedMonitor(100, 1.0, idle=5.0, start=0.0)
    m.update(100, 0.9)
    m.update(10, 60.0)  # a pause between two update cycles: measured afresh from here
    m.update(100, 60.5)
    m.update(10, 61.0)  # 120 B since 60.0: fine
    # a drip below the floor with short gaps is still seen
    with pytest.raises(SlowRetrievalAttack):
        for k in range(1, 10):
            m.update(10, 61.0 + 0.5 * k)


def test_5_4_slow_retrieval_without_idle_counts_the_pause() -> None:
    m = SpeedMonitor(100, 1.0, start=0.0)
    m.update(100, 0.9)
    with pytest.raises(SlowRetrievalAttack):
        m.update(10, 60.0)


def test_5_4_slow_retrieval_zero_floor_or_window_is_off() -> None:
    SpeedMonitor(0, 1.0, start=0.0).check(1e9)
    SpeedMonitor(100, 0, start=0.0).check(1e9)
    assert not SpeedMonitor(0, 1.0).enabled


def test_5_4_slow_retrieval_negative_bytes_are_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        SpeedMonitor(1, 1.0).update(-1, 0.0)
