"""The transfer progress bar (hardware/progress.py): redrawn in place on a terminal (a real
pty here), a few plain lines in a log, nothing when quiet."""

from __future__ import annotations

import io
import os
import sys

from hardware.progress import format_line, progress_bar

KIB = 1024


def feed(bar, total: int, step: int = 1000) -> None:
    for done in range(0, total, step):
        bar(done, total)
    bar(total, total)


def test_line_format() -> None:
    line = format_line("image", 512 * KIB, 1024 * KIB, 6.0)
    assert line.startswith("image  50% [##########..........] 512kB/1.00MB [00:06<00:06, ")
    assert format_line("x", 5, 10, 1.0, "REFUSED").endswith(", REFUSED]")


def test_a_log_gets_one_final_line_by_default() -> None:
    out = io.StringIO()
    feed(progress_bar("download a.bin", stream=out), 12_345)
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
    assert out.getvalue().startswith("download a.bin 100% [####################] 12.1kB/12.1kB")


def test_a_log_gets_at_most_log_steps_lines_in_order() -> None:
    out = io.StringIO()
    bar = progress_bar("image", stream=out, log_steps=10)
    feed(bar, 100_000, step=700)
    bar(100_000, 100_000)  # a repeat after the end is ignored
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 11 and lines == bar.lines
    pcts = [int(line.split("%")[0].split()[-1]) for line in lines]
    assert pcts == sorted(pcts) and pcts[-1] == 100


def test_quiet_and_log_steps_zero_write_nothing() -> None:
    for kwargs in ({"quiet": True}, {"log_steps": 0}):
        out = io.StringIO()
        bar = progress_bar("image", stream=out, **kwargs)
        feed(bar, 5000)
        assert out.getvalue() == "" and bar.closed


def test_close_early_shows_where_it_stopped_and_the_note() -> None:
    out = io.StringIO()
    bar = progress_bar("brake-1", stream=out)
    bar(3 * KIB, 8 * KIB)
    bar.close("REFUSED")
    bar(8 * KIB, 8 * KIB)  # nothing after close
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().startswith("brake-1  38% [#######.............] 3.00kB/8.00kB")
    assert "REFUSED]" in out.getvalue()


def _drain(fd: int) -> bytes:
    """Everything written to the pty so far: one read may return only part of it."""
    import select

    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


def test_a_terminal_sees_the_bar_redrawn_in_place_and_left_on_screen(monkeypatch) -> None:
    # a fresh pty reports 0 x 0: tqdm alone would trim the bar to nothing and hide it
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
    master, slave = os.openpty()
    try:
        with open(slave, "w", encoding="utf-8", closefd=False) as tty:
            assert tty.isatty()
            with monkeypatch.context() as m:
                m.setattr(sys, "stderr", tty)  # tqdm sizes only stdout and stderr
                feed(progress_bar("image"), 64 * KIB, step=4 * KIB)
            quiet = progress_bar("other", stream=tty, quiet=True)
            feed(quiet, 64 * KIB)
        shown = _drain(master).decode("utf-8", "replace")
    finally:
        os.close(master)
        os.close(slave)
    assert "\r" in shown and "other" not in shown
    final = shown.replace("\r\n", "\n").split("\r")[-1]
    assert final.startswith("image 100% [") and "64.0kB/64.0kB" in final
    assert final.endswith("\n")


def test_without_auto_close_the_caller_ends_the_bar_with_its_verdict() -> None:
    out = io.StringIO()
    bar = progress_bar("ecu-brake", stream=out, auto_close=False)
    feed(bar, 4 * KIB)
    assert out.getvalue() == "" and not bar.closed
    bar.close("sha256 ok")
    assert out.getvalue().startswith("ecu-brake 100% [####################] 4.00kB/4.00kB")
    assert out.getvalue().endswith(", sha256 ok]\n")


def test_without_timing_a_line_shows_no_times_or_rate() -> None:
    out = io.StringIO()
    feed(progress_bar("send to brake-1", stream=out, timing=False), 2 * KIB)
    assert out.getvalue() == "send to brake-1 100% [####################] 2.00kB/2.00kB\n"
