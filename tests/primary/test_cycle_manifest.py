"""The manifest upload as a cycle outcome (issue 15): a manifest the Director refuses (4xx)
or never gets (5xx, a dropped connection) is the cycle's error, with the server's reason,
in ``run``'s exit status, the status file and ``status``; the next cycle sends a new one.
Against the real services, the Director behind a proxy that can answer the POST itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cycle_support import PRIMARY_ID, VIN, backend_and_vehicle

from primary.cli import main as cli_main
from primary.manifest import server_reason
from primary.state import PrimaryState
from uptane.errors import FetchError

BRAKES = "brakes/fw-2.bin"
ONE = {"brk-1": "brk-v1"}


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def record(car):
    return PrimaryState(car.config.storage_dir, car.config.limits).load_cycle()


def test_a_refused_manifest_is_the_cycles_error_with_the_directors_reason(tmp_path, now, capsys):
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        reason = "arbitrary-software: report of ECU 'brk-1' names a length out of range"
        backend.director_proxy.rules.post_answer = (403, json.dumps({"detail": reason}).encode())
        refused = car.cycle()
        # the cycle went on (metadata, download, install), and ends with the upload's error
        assert refused.installed == {"brk-1": BRAKES}
        assert not refused.manifest_sent
        assert isinstance(refused.error, FetchError) and not refused.ok
        assert "refused by the Director (HTTP 403)" in str(refused.error)
        assert reason in str(refused.error)
        assert reason in (record(car).last_error or "")
        assert "manifest refused by the Director (HTTP 403)" in "\n".join(car.lines)
        # what the user runs: exit status 1, and status names the reason
        assert cli_main(["run", "--once", "--quiet", "--config", str(car.config_path)]) == 1
        capsys.readouterr()
        assert cli_main(["status", "--config", str(car.config_path)]) == 0
        out = capsys.readouterr().out
        assert "last error: fetch-failure: manifest refused by the Director (HTTP 403)" in out
        assert reason in out

        # the Director takes manifests again: the next cycle sends one, no error is left
        backend.director_proxy.reset()
        again = car.cycle()
        assert again.error is None and again.manifest_sent, again.error
        assert record(car).last_error is None
        path, status, _body, _answer = backend.director_proxy.posts[-1]
        assert path == f"/vehicles/{VIN}/manifest" and status == 200


@pytest.mark.parametrize("failure", ["503", "hangup"])
def test_a_failed_manifest_upload_is_the_cycles_error_and_is_retried(tmp_path, now, failure):
    with backend_and_vehicle(tmp_path, now, secondaries={}) as (backend, car):
        backend.assign(VIN, [(PRIMARY_ID, "gw/gw-2.bin")])
        if failure == "503":
            backend.director_proxy.rules.post_answer = (503, b"upstream overloaded")
        else:
            backend.director_proxy.rules.post_hangup = True
        failed = car.cycle()
        assert failed.installed == {PRIMARY_ID: "gw/gw-2.bin"}  # the cycle went on
        assert isinstance(failed.error, FetchError), failed.error
        if failure == "503":
            assert "failed at the Director (HTTP 503): upstream overloaded" in str(failed.error)
        else:
            assert "manifest not sent" in str(failed.error)
        assert "manifest" in (record(car).last_error or "")
        backend.director_proxy.reset()
        assert car.cycle().error is None and record(car).last_error is None


def test_an_attack_found_later_in_the_cycle_is_the_cycles_error_before_the_upload(tmp_path, now):
    """The cycle's error is the most telling one: a verification attack outranks a refused
    upload (which stays in ``manifest_error``)."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        backend.director_proxy.rules.post_answer = (400, b'{"detail": "bad manifest"}')
        backend.director_proxy.rules.tamper["targets.json"] = lambda b: b.replace(b"2", b"3", 1)
        result = car.cycle()
        assert result.error is not None and not isinstance(result.error, FetchError)
        assert result.manifest_error is not None and "bad manifest" in result.manifest_error


def test_the_servers_reason_is_one_printable_line():
    assert server_reason(b'{"detail": "no\\nway"}') == "no way"
    assert server_reason(b"plain\x00text\r\n") == "plain text"
    assert server_reason(b'{"detail": [{"loc": 1}]}') == '[{"loc": 1}]'
    assert server_reason(b"") == "no reason given"
    assert len(server_reason(b"x" * 5000)) == 300
