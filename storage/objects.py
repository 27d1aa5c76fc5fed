"""Objects by key: a local directory (the default) or an S3-compatible bucket (issue 19).

The Image repository's images and signed metadata can live in object storage, so that
vehicles (or a CDN in front) read them from the bucket and several service nodes share
them (docs/deploy.md). One interface, two backends:

- :class:`LocalObjects`: files under a directory, each written atomically through the
  :class:`~storage.fs.FileSystem` seam (``atomic_write``), mode 0644;
- :class:`S3Objects`: a bucket (and a key prefix) of any S3-compatible server through
  boto3 (path-style addressing, so a server on a plain host and port works). Credentials
  come from boto3's usual chain (``AWS_ACCESS_KEY_ID``..., a profile, an instance role),
  never from a configuration file of this project.

Keys are ``/``-separated relative paths (``metadata/3.targets.json``,
``targets/brakes/HASH.fw.bin``) checked by :func:`check_key`: no ``..``, no empty segment,
no leading ``/``, no backslash or NUL. Reads are capped: a larger object is refused
(:class:`~uptane.errors.EndlessDataAttack`) before its body is read.

:func:`open_objects` takes a location: a directory, or ``s3://BUCKET/PREFIX`` with
``endpoint_url`` (for servers other than AWS), ``region`` and ``public_read`` (objects
written with the ``public-read`` ACL, for buckets that use ACLs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from storage.atomic import atomic_write, read_capped
from storage.fs import LOCAL, FileSystem
from uptane.errors import EndlessDataAttack, MalformedInput

#: the longest key accepted (S3 allows 1024 bytes)
MAX_KEY = 1024


def check_key(key: str) -> str:
    """``key`` if it is a safe relative object key; MalformedInput otherwise."""
    if (
        not key
        or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise MalformedInput(f"unsafe object key {key[:80]!r}")
    return key


def content_type(key: str) -> str:
    return "application/json" if key.endswith(".json") else "application/octet-stream"


class ObjectStore(Protocol):
    """What the services need of a store of objects."""

    def put(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, path: Path) -> None: ...

    def get(self, key: str, cap: int) -> bytes | None: ...

    def size(self, key: str) -> int | None: ...

    def delete(self, key: str) -> None: ...

    def listing(self, prefix: str = "") -> Iterator[tuple[str, int]]: ...

    def describe(self) -> str: ...


class LocalObjects:
    """Objects as files under ``root`` (the default backend)."""

    def __init__(self, root: Path, fs: FileSystem = LOCAL) -> None:
        self.root = Path(root)
        self.fs = fs

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=0o644, fs=self.fs)

    def put_file(self, key: str, path: Path) -> None:
        self.put(key, path.read_bytes())

    def get(self, key: str, cap: int) -> bytes | None:
        try:
            return read_capped(self._path(key), cap)
        except FileNotFoundError:
            return None

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def listing(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Every object (key, size) whose key starts with ``prefix``."""
        base = self.root
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                key = p.relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key, p.stat().st_size

    def describe(self) -> str:
        return f"directory {self.root}"


class S3Objects:
    """Objects in an S3-compatible bucket, under ``prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        public_read: bool = False,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.public_read = public_read
        if client is None:
            import boto3  # type: ignore[import-untyped]
            from botocore.config import Config  # type: ignore[import-untyped]

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
            )
        self.client = client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _extra(self, key: str) -> dict[str, Any]:
        extra: dict[str, Any] = {"ContentType": content_type(key)}
        if self.public_read:
            extra["ACL"] = "public-read"
        return extra

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, **self._extra(key)
        )

    def put_file(self, key: str, path: Path) -> None:
        # upload_file streams in parts: an image never has to fit in memory
        self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=self._extra(key))

    def get(self, key: str, cap: int) -> bytes | None:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        body = obj["Body"]
        try:
            if int(obj.get("ContentLength", 0)) > cap:
                raise EndlessDataAttack(f"object {key[:80]} is larger than {cap} bytes")
            data: bytes = body.read(cap + 1)
        finally:
            body.close()
        if len(data) > cap:
            raise EndlessDataAttack(f"object {key[:80]} is larger than {cap} bytes")
        return data

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def listing(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Every object (key, size) whose key starts with ``prefix``."""
        base = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base + prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"][len(base) :], int(obj.get("Size", 0))

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def public_url(self) -> str | None:
        """Where an anonymous reader finds these objects (path-style), if known."""
        if self.endpoint_url is None:
            return None
        base = f"{self.endpoint_url.rstrip('/')}/{self.bucket}"
        return f"{base}/{self.prefix}" if self.prefix else base


def open_objects(location: str | dict[str, Any], fs: FileSystem = LOCAL) -> ObjectStore:
    """A store from a location: a directory path, ``s3://BUCKET[/PREFIX]``, or a table
    ``{"url": ..., "endpoint_url": ..., "region": ..., "public_read": ...}``."""
    spec = {"url": location} if isinstance(location, str) else dict(location)
    extra = set(spec) - {"url", "endpoint_url", "region", "public_read"}
    if extra:
        raise ValueError(f"object store: unknown setting(s) {', '.join(sorted(extra))}")
    url = spec.get("url")
    if not isinstance(url, str) or not url:
        raise ValueError("object store: give url (a directory or s3://BUCKET/PREFIX)")
    if not url.startswith("s3://"):
        return LocalObjects(Path(url), fs)
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"object store: no bucket in {url!r}")
    return S3Objects(
        bucket,
        prefix,
        endpoint_url=spec.get("endpoint_url"),
        region=spec.get("region"),
        public_read=bool(spec.get("public_read", False)),
    )


__all__ = [
    "LocalObjects",
    "ObjectStore",
    "S3Objects",
    "check_key",
    "content_type",
    "open_objects",
]
