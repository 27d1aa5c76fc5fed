"""Secure time on an ECU (§5.4, §5.4.2 step 5): the latest verified time never moves back."""

from __future__ import annotations

import pytest

from uptane.errors import MalformedInput
from uptane.securetime import MAX_TIME, decode_time, next_latest_time


def test_5_4_2_latest_time_only_moves_forwards():
    assert next_latest_time(1000, 2000) == 2000
    assert next_latest_time(2000, 1000) == 2000  # an older time is ignored, never applied
    assert next_latest_time(0, b"2030-01-01T00:00:00Z") == 1893456000


@pytest.mark.parametrize(
    "bad", [-1, MAX_TIME + 1, True, b"2030-01-01", b"\xff\xfe", b"x" * 10_000, 1.5]
)
def test_5_4_time_out_of_range_or_unreadable_is_malformed(bad):
    with pytest.raises(MalformedInput):
        decode_time(bad)  # type: ignore[arg-type]
