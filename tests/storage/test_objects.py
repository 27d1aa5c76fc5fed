"""Objects by key (issue 19): the local directory and an S3-compatible bucket (moto's
server mode, a real process) behave alike: put, get, size, listing, delete, streamed
uploads; unsafe keys never reach either; a read never goes past its cap."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from s3_support import s3  # noqa: F401  (the fixture)

from storage.objects import LocalObjects, S3Objects, check_key, open_objects
from uptane.errors import EndlessDataAttack, MalformedInput


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return open_objects(str(tmp_path / "objects"))
    endpoint = request.getfixturevalue("s3")
    return open_objects({"url": "s3://images/repo", "endpoint_url": endpoint, "public_read": True})


def test_put_get_size_listing_delete(store, tmp_path: Path):
    assert store.get("metadata/1.root.json", 100) is None and store.size("x/y") is None
    store.put("metadata/1.root.json", b'{"a": 1}')
    store.put("metadata/timestamp.json", b"ts")
    image = tmp_path / "image.bin"
    image.write_bytes(b"\x00\x01" * 40_000)
    store.put_file("targets/brakes/abcd.fw.bin", image)
    assert store.get("metadata/1.root.json", 100) == b'{"a": 1}'
    assert store.size("targets/brakes/abcd.fw.bin") == 80_000
    assert store.get("targets/brakes/abcd.fw.bin", 80_000) == image.read_bytes()
    assert sorted(store.listing()) == [
        ("metadata/1.root.json", 8),
        ("metadata/timestamp.json", 2),
        ("targets/brakes/abcd.fw.bin", 80_000),
    ]
    assert [k for k, _ in store.listing("metadata/")] == [
        "metadata/1.root.json",
        "metadata/timestamp.json",
    ]
    store.put("metadata/timestamp.json", b"newer")  # replaced
    assert store.get("metadata/timestamp.json", 100) == b"newer"
    store.delete("metadata/timestamp.json")
    assert store.get("metadata/timestamp.json", 100) is None


def test_a_read_never_goes_past_its_cap(store):
    store.put("targets/big.bin", b"x" * 5000)
    with pytest.raises(EndlessDataAttack):
        store.get("targets/big.bin", 4999)
    assert len(store.get("targets/big.bin", 5000)) == 5000


@pytest.mark.parametrize(
    "key", ["", "/abs", "a/../b", "a//b", "a/./b", "..", "a\\b", "a\x00b", "x" * 1100, "a/"]
)
def test_unsafe_keys_are_refused_before_any_io(store, key: str):
    with pytest.raises(MalformedInput):
        store.put(key, b"x")
    with pytest.raises(MalformedInput):
        store.get(key, 10)
    assert check_key("metadata/1.root.json") == "metadata/1.root.json"


def test_a_public_bucket_is_read_anonymously_over_http(s3):  # noqa: F811
    store = open_objects({"url": "s3://images/repo", "endpoint_url": s3, "public_read": True})
    assert isinstance(store, S3Objects)
    store.put("metadata/timestamp.json", b"{}")
    r = httpx.get(f"{store.public_url()}/metadata/timestamp.json", timeout=10)
    assert r.status_code == 200 and r.content == b"{}"
    assert r.headers["content-type"] == "application/json"
    private = open_objects({"url": "s3://images/private", "endpoint_url": s3})
    private.put("secret.bin", b"x")
    assert httpx.get(f"{s3}/images/private/secret.bin", timeout=10).status_code == 403


def test_locations_and_settings_are_checked(tmp_path: Path):
    assert isinstance(open_objects(str(tmp_path)), LocalObjects)
    for bad in ({"url": "s3://"}, {"url": ""}, {"url": "s3://b/p", "acl": "x"}):
        with pytest.raises(ValueError):
            open_objects(bad)
