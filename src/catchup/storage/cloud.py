"""S3-compatible, GCS and Azure object stores, through obstore.

obstore (Rust's object_store) does the multipart uploads, retries with
exponential backoff on transient errors (5xx, timeouts, dropped connections)
and reads credentials from the standard environment of each cloud
(`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, instance and
web-identity credentials; `GOOGLE_APPLICATION_CREDENTIALS`; `AZURE_STORAGE_*`).
An object becomes visible only when its upload completes: a writer that is
abandoned on error is never completed.

Compare-and-swap uses each service's preconditions: S3 and Azure
`If-None-Match: *` and `If-Match: <etag>`, GCS generation matches. A version is
the object's etag and, where the store has one, its generation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError
from obstore.store import AzureStore, GCSStore, S3Store

from catchup.config.repository import StorageSettings
from catchup.storage.store import ObjectNotFound, StorageError, StoredObject
from catchup.streams import Readable, Writable

if TYPE_CHECKING:  # obstore's config types exist only in its stubs
    from obstore import UpdateVersion
    from obstore.store import AzureConfig, ClientConfig, RetryConfig, S3Config

DELETE_BATCH = 1000
BUCKET_MISSING = ("NoSuchBucket", "ContainerNotFound", "The specified bucket does not exist")
ACCESS_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403 Forbidden")


class CloudStore:
    def __init__(self, url: str, settings: StorageSettings) -> None:
        # Which schemes reach this store is SCHEMES' business (storage/__init__.py).
        match = re.match(r"^([a-z0-9]+)://([^/]+)/?(.*)$", url)
        if match is None:
            raise StorageError(f"repository = {url!r}: expected scheme://bucket[/prefix]")
        scheme, bucket, prefix = match.groups()
        self.url = url
        self.settings = settings
        self.store = _build(scheme, bucket, prefix.strip("/") or None, settings)

    @contextmanager
    def writer(self, key: str) -> Iterator[Writable]:
        with self._errors("write", key):
            upload = obstore.open_writer(
                self.store,
                key,
                buffer_size=self.settings.part_size_mb << 20,
                max_concurrency=self.settings.upload_concurrency,
            )
        yield upload
        # Reached only on success: completing the upload makes the object visible.
        with self._errors("write", key):
            upload.close()

    @contextmanager
    def reader(self, key: str) -> Iterator[Readable]:
        """Ranged reads, `download_concurrency` parts in flight: memory stays bounded."""
        with self._errors("read", key):
            size = obstore.head(self.store, key)["size"]
        yield _RangedReader(self, key, size)

    def put(self, key: str, data: bytes) -> None:
        with self._errors("write", key):
            obstore.put(self.store, key, data)

    def get(self, key: str) -> bytes:
        with self._errors("read", key):
            return bytes(obstore.get(self.store, key).bytes())

    def read_range(self, key: str, start: int, buffer: memoryview) -> int:
        try:
            with self._errors("read", key):
                data = obstore.get_range(self.store, key, start=start, length=len(buffer))
        except ObjectNotFound:
            raise
        except StorageError:
            # A range that starts past the end is an error to the store; to the caller,
            # a short read (a truncated object) it reports as such.
            with self._errors("read", key):
                size = obstore.head(self.store, key)["size"]
            if size <= start:
                return 0
            raise
        view = memoryview(data)
        buffer[: len(view)] = view
        return len(view)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        with self._errors("list", prefix or "/"):
            for batch in obstore.list(self.store, prefix=prefix.rstrip("/") or None):
                for meta in batch:
                    if meta["path"].startswith(prefix):
                        yield StoredObject(meta["path"], meta["size"])

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            obstore.delete(self.store, key)

    def delete_prefix(self, prefix: str) -> None:
        keys = [obj.key for obj in self.list(prefix)]
        for start in range(0, len(keys), DELETE_BATCH):
            with self._errors("delete", prefix):
                obstore.delete(self.store, keys[start : start + DELETE_BATCH])

    def partial_writes(self, prefix: str) -> Iterator[str]:
        return iter(())  # an unfinished upload is never listed; lifecycle rules expire it

    def create(self, key: str, data: bytes) -> str | None:
        with self._errors("write", key):
            try:
                return _version(obstore.put(self.store, key, data, mode="create"))
            except AlreadyExistsError:
                return None

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        with self._errors("read", key):
            try:
                result = obstore.get(self.store, key)
                return bytes(result.bytes()), _version(result.meta)
            except FileNotFoundError:
                return None

    def replace(self, key: str, data: bytes, version: str) -> str | None:
        e_tag, generation = json.loads(version)
        expected: UpdateVersion = {}
        if e_tag:
            expected["e_tag"] = e_tag
        if generation:
            expected["version"] = generation
        with self._errors("write", key):
            try:
                return _version(obstore.put(self.store, key, data, mode=expected))
            except (PreconditionError, FileNotFoundError):
                return None

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """Every failure as one line naming the store and the object (after obstore's retries)."""
        try:
            yield
        except (BaseError, OSError, RuntimeError) as exc:
            message = str(exc)
            if any(mark in message for mark in BUCKET_MISSING):
                raise StorageError(
                    f"{self.url}: the bucket does not exist; create it or fix `repository`"
                ) from None
            if isinstance(exc, PermissionError) or any(m in message for m in ACCESS_DENIED):
                raise StorageError(
                    f"{self.url}: access denied while trying to {action} {key}; check the "
                    "credentials in the environment and the bucket policy"
                ) from None
            if isinstance(exc, FileNotFoundError):
                raise ObjectNotFound(f"{self.url}: object {key} does not exist") from None
            detail = message.strip().splitlines()[0][:300] if message.strip() else repr(exc)
            raise StorageError(f"{self.url}: cannot {action} {key}: {detail}") from None


class _RangedReader:
    """Reads an object front to back, fetching the next parts in parallel."""

    def __init__(self, store: CloudStore, key: str, size: int) -> None:
        self.store, self.key, self.size = store, key, size
        self.part = store.settings.part_size_mb << 20
        self.window = store.settings.download_concurrency
        self.offset = 0  # of the next byte to fetch
        self.buffered: list[bytes] = []
        self.position = 0  # within buffered[0]

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if not self.buffered and not self._fetch():
                break
            head = self.buffered[0]
            take = (
                len(head) - self.position
                if size < 0
                else min(size - len(out), len(head) - self.position)
            )
            out += head[self.position : self.position + take]
            self.position += take
            if self.position == len(head):
                self.buffered.pop(0)
                self.position = 0
        return bytes(out)

    def _fetch(self) -> bool:
        if self.offset >= self.size:
            return False
        starts = list(
            range(self.offset, min(self.size, self.offset + self.part * self.window), self.part)
        )
        ends = [min(start + self.part, self.size) for start in starts]
        with self.store._errors("read", self.key):
            parts = obstore.get_ranges(self.store.store, self.key, starts=starts, ends=ends)
        self.buffered = [bytes(part) for part in parts]
        self.offset = ends[-1]
        return True


def _version(meta: Any) -> str:
    return json.dumps([meta.get("e_tag"), meta.get("version")])


def _build(
    scheme: str, bucket: str, prefix: str | None, settings: StorageSettings
) -> S3Store | GCSStore | AzureStore:
    retry: RetryConfig = {
        "max_retries": settings.max_retries,
        "retry_timeout": timedelta(seconds=settings.retry_timeout_seconds),
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=15),
            "base": 2,
        },
    }
    client: ClientConfig = {
        "timeout": timedelta(seconds=settings.request_timeout_seconds),
        "connect_timeout": timedelta(seconds=settings.connect_timeout_seconds),
    }
    if settings.endpoint and settings.endpoint.startswith("http://"):
        client["allow_http"] = True
    if scheme == "s3":
        config: S3Config = {}
        if settings.endpoint:
            config["endpoint"] = settings.endpoint
        if settings.region:
            config["region"] = settings.region
        if settings.path_style:
            config["virtual_hosted_style_request"] = False
        if settings.server_side_encryption:
            config["server_side_encryption"] = settings.server_side_encryption
            if settings.kms_key_id:
                config["sse_kms_key_id"] = settings.kms_key_id
        return S3Store(
            bucket, prefix=prefix, config=config, client_options=client, retry_config=retry
        )
    if scheme == "gs":  # no `endpoint`: obstore takes a GCS base URL only from the
        # service-account file (`gcs_base_url`), which is where an emulator is named
        return GCSStore(bucket, prefix=prefix, client_options=client, retry_config=retry)
    if scheme != "az":
        raise StorageError(f"{scheme}:// is not an object store catchup can open")
    endpoint: AzureConfig = {"endpoint": settings.endpoint} if settings.endpoint else {}
    return AzureStore(
        bucket, prefix=prefix, config=endpoint, client_options=client, retry_config=retry
    )
