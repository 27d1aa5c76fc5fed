"""An S3-compatible server for tests (issue 19): moto's server mode as a real process on
127.0.0.1, with throwaway credentials in the environment."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

#: what boto3 reads; moto accepts any
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_s3(log: Path) -> Iterator[str]:
    """``moto_server`` on a free port; yields its endpoint URL. Skips when moto's server
    mode is not installed (``pip install 'moto[server]'``)."""
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists() and shutil.which("moto_server") is None:
        pytest.skip("moto's server mode is not installed (pip install 'moto[server]')")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(exe if exe.exists() else "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/moto-api/", timeout=1).status_code < 500:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An S3-compatible endpoint with a bucket named ``images``."""
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    with moto_s3(tmp_path / "moto.log") as url:
        import boto3

        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="images")
        yield url


def env_with_credentials() -> dict[str, str]:
    """The environment for a child process that talks to the test server."""
    return {**os.environ, **CREDENTIALS}
