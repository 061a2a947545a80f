"""A Milvus server's MinIO/S3 bucket, where `mmrag ingest --bulk` puts its Parquet files.

A Milvus server on object storage (MinIO in docker-compose.yml, S3 in a cloud) imports files by
their object keys in its own bucket, not by paths on a disk. So for such a server the bulk
writer uploads each file under `<prefix>/<uuid>/` in that bucket (`bulk_bucket`,
`http://host:port/bucket[/prefix]`), and the keys are removed once their import completed.
Only the standard library is imported here (the settings parse the URL); the MinIO client,
which pymilvus's bulk writer brings, is imported when a bucket is used.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PREFIX = "mmrag-bulk"
URL_FORM = "http(s)://host:port/bucket[/prefix]"


@dataclass(frozen=True)
class BulkBucket:
    """Where the files go: `endpoint` (host:port), `name` (the bucket the server uses),
    `prefix` (the folder of mmrag's files in it), TLS or not, and the keys to sign with."""

    endpoint: str
    name: str
    prefix: str = DEFAULT_PREFIX
    secure: bool = False
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)

    @classmethod
    def parse(cls, url: str, access_key: str = "", secret_key: str = "") -> BulkBucket:
        """The bucket an URL names; ValueError saying what is wrong and the form it takes.
        Keys left empty come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, if set."""
        parts = urlsplit(url.strip())
        path = [p for p in parts.path.split("/") if p]
        if parts.scheme not in ("http", "https") or not parts.hostname or not path:
            raise ValueError(f"{url!r} is not {URL_FORM}")
        if parts.username or parts.query or parts.fragment:
            raise ValueError(
                f"{url!r}: give the keys as bulk_access_key and bulk_secret_key, not in the URL"
            )
        try:
            port = parts.port
        except ValueError as exc:  # a port out of range or not a number
            raise ValueError(f"{url!r}: {exc}") from None
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        return cls(
            endpoint=f"{host}:{port}" if port else host,
            name=path[0],
            prefix="/".join(path[1:]) or DEFAULT_PREFIX,
            secure=parts.scheme == "https",
            access_key=access_key or os.environ.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        )

    @property
    def url(self) -> str:
        """The URL it was given as (without keys), for messages."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}/{self.name}/{self.prefix}"

    def client(self) -> Any:
        """A MinIO client for the endpoint (it reaches nothing until a call)."""
        from minio import Minio

        return Minio(
            self.endpoint,
            access_key=self.access_key or None,
            secret_key=self.secret_key or None,
            secure=self.secure,
        )

    def connect_param(self) -> Any:
        """pymilvus's RemoteBulkWriter parameters for this bucket."""
        from pymilvus.bulk_writer import RemoteBulkWriter

        return RemoteBulkWriter.S3ConnectParam(
            bucket_name=self.name,
            endpoint=self.endpoint,
            access_key=self.access_key or None,
            secret_key=self.secret_key or None,
            secure=self.secure,
        )

    def check(self) -> None:
        """Raise OSError with one line saying why the bucket cannot take files (unreachable,
        refused keys, no such bucket); return when it can."""
        try:
            exists = self.client().bucket_exists(self.name)
        except Exception as exc:  # urllib3's connection errors, minio's S3Error: any says why
            raise OSError(f"bulk_bucket {self.url}: {_reason(exc)}") from None
        if not exists:
            raise OSError(
                f"bulk_bucket {self.url}: the bucket {self.name!r} does not exist (it must be "
                "the one the Milvus server stores its data in: minio.bucketName)"
            )

    def remove(self, folder: str) -> int:
        """Remove every object under `folder` (a writer's `<prefix>/<uuid>`); how many."""
        client = self.client()
        folder = folder.strip("/") + "/"
        names = [o.object_name for o in client.list_objects(self.name, folder, recursive=True)]
        for name in names:
            client.remove_object(self.name, name)
        return len(names)

    def sweep(self, older_than: float) -> int:
        """Remove the writers' folders (`<prefix>/<uuid>/`) whose files are all older than
        `older_than` (a POSIX time): what killed runs uploaded. Other keys are never touched.
        How many objects were removed."""
        client = self.client()
        newest: dict[str, list[tuple[str, float]]] = {}
        for obj in client.list_objects(self.name, self.prefix + "/", recursive=True):
            rest = obj.object_name[len(self.prefix) + 1 :].split("/", 1)
            if len(rest) == 2 and _is_uuid(rest[0]):
                when = (obj.last_modified or datetime.now(UTC)).timestamp()
                newest.setdefault(rest[0], []).append((obj.object_name, when))
        removed = 0
        for objects in newest.values():
            if max(when for _, when in objects) < older_than:
                for name, _ in objects:
                    client.remove_object(self.name, name)
                removed += len(objects)
        return removed


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _reason(exc: BaseException) -> str:
    """One line from a MinIO or connection error: S3's code and message, or the failed
    connection's own words (urllib3 wraps them in the pool's and the retries' errors)."""
    code, message = getattr(exc, "code", None), getattr(exc, "message", None)
    if code and message:
        return f"{code}: {message}"
    last = getattr(exc, "reason", None)  # urllib3's MaxRetryError: the last attempt's error
    text = str(last if isinstance(last, BaseException) else exc) or type(exc).__name__
    if text.startswith(("HTTPConnection(", "HTTPSConnection(", "<urllib3")):
        text = text.split(": ", 1)[-1]  # drop the connection object's repr
    return text.splitlines()[0][:300]
