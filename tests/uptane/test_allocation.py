"""The collector pause around large decodes (uptane/allocation.py, issue 20) always ends,
nested or not, and never turns on a collector the application turned off."""

from __future__ import annotations

import gc
import threading

import pytest

from uptane.allocation import PAUSE_FROM_BYTES, collector_paused


@pytest.fixture(autouse=True)
def _restore_gc():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_20_paused_only_for_large_inputs_and_enabled_again() -> None:
    gc.enable()
    with collector_paused(PAUSE_FROM_BYTES - 1):
        assert gc.isenabled()
    with collector_paused(PAUSE_FROM_BYTES):
        assert not gc.isenabled()
        with collector_paused(PAUSE_FROM_BYTES):
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer decode still runs
    assert gc.isenabled()


def test_20_enabled_again_after_an_error() -> None:
    gc.enable()
    with pytest.raises(ValueError), collector_paused(PAUSE_FROM_BYTES):
        raise ValueError("a refused input")
    assert gc.isenabled()


def test_20_a_collector_the_application_disabled_stays_disabled() -> None:
    gc.disable()
    with collector_paused(PAUSE_FROM_BYTES):
        pass
    assert not gc.isenabled()


def test_20_concurrent_decodes_end_together() -> None:
    gc.enable()
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused(PAUSE_FROM_BYTES):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(10)
    with collector_paused(PAUSE_FROM_BYTES):
        pass
    assert not gc.isenabled()  # the other thread's decode is not over
    release.set()
    t.join(10)
    assert gc.isenabled()
