"""The HTTP plumbing both services share (director/httpcommon.py)."""

from __future__ import annotations

import threading
import time

from fastapi import FastAPI
from fastapi.testclient import TestClient

from director.httpcommon import refresher_lifespan


def test_refresher_runs_every_job_while_the_app_is_up_and_a_failing_job_stops_nothing():
    ran: list[str] = []
    both = threading.Event()

    def failing() -> None:
        ran.append("failing")
        raise RuntimeError("the signer is away")

    def healthy() -> None:
        ran.append("healthy")
        if ran.count("healthy") >= 2:
            both.set()

    app = FastAPI(lifespan=refresher_lifespan(0.01, failing, healthy))
    with TestClient(app):
        assert both.wait(30), ran  # a second round came: the failure did not end the loop
    time.sleep(0.05)  # a job already in the threadpool may still finish
    stopped_at = len(ran)
    time.sleep(0.1)
    assert len(ran) == stopped_at  # the refresher stops with the app
    assert ran[:2] == ["failing", "healthy"]
