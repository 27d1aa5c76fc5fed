"""Fixtures for the Primary's tests; the servers themselves are in ``http_servers``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from http_servers import Server, StaticHandler, serve


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[Server]:
    """A static web server over ``tmp_path / "www"`` (``server.root``)."""
    root = tmp_path / "www"
    root.mkdir()
    with serve(StaticHandler, root=root) as server:
        server.root = root  # type: ignore[attr-defined]
        yield server
