"""The video-store interface: where a finished job's MP4 lives.

``LocalVideoStore`` (the default): ``<data_dir>/videos/<key>``, written atomically (a
temporary file renamed over the name). ``S3VideoStore`` (``CINETRON_VIDEO_URL=s3://bucket/
prefix``): one object per run, written with a single PUT, which S3 makes visible whole or
not at all; boto3 reads the standard ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and ``AWS_DEFAULT_REGION``.

A run's key carries the claim's fence, so a replica that lost its lease and uploads anyway
writes an object no row points at (and deletes it); callers only ever see the object the
SUCCEEDED row names.
"""

from __future__ import annotations

import errno
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc

from cinetron.api.errors import ApiError
from cinetron.api.logs import log
from cinetron.core.files import write_bytes_atomic

MAX_PUT_TRIES = 5  # with the backoff below: about 15 s before a job fails on its upload
PUT_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class VideoMissing(Exception):
    """The store answered, and the object is not there."""


class VideoStoreError(ApiError):
    """The store could not be used (unreachable, full, misconfigured)."""


class VideoStore(ABC):
    describe: str = ""
    #: Whether ``url`` can hand out time-limited links.
    has_urls: bool = False

    def key_for(self, job_id: str, fence: int) -> str:
        """The name of this run's MP4 (the first run keeps the historical ``<job_id>.mp4``)."""
        return f"{job_id}.mp4" if fence <= 1 else f"{job_id}.{fence}.mp4"

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` whole, or raise ``VideoStoreError`` leaving nothing behind."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes, or ``VideoMissing`` / ``VideoStoreError``."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def url(self, key: str, ttl_s: int) -> str | None:
        """A link the caller can GET for ``ttl_s`` seconds, when the store has them."""
        return None

    def check(self) -> None:  # noqa: B027 (optional hook; most stores need no check)
        """At start: raise ``SystemExit`` with what to fix if the store is misconfigured."""


class LocalVideoStore(VideoStore):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.describe = str(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SystemExit(
                f"the data dir {folder.parent} cannot hold the jobs database and videos ({e}); "
                "point --data-dir / CINETRON_DATA_DIR at a writable folder"
            ) from None

    def _path(self, key: str) -> Path:
        if "/" in key or key.startswith("."):
            raise ValueError(f"bad video key {key!r}")
        return self.folder / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            write_bytes_atomic(path, data)  # removes its temporary file on failure
        except OSError as e:
            code = (
                grpc.StatusCode.RESOURCE_EXHAUSTED
                if e.errno == errno.ENOSPC
                else grpc.StatusCode.INTERNAL
            )
            raise VideoStoreError(
                code,
                f"the video was generated but could not be stored at {path}: "
                f"{e.strerror or e}; free disk space or make the data dir writable, "
                "then submit the job again",
            ) from e

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise VideoMissing(str(self._path(key))) from None
        except OSError as e:
            raise VideoStoreError(
                grpc.StatusCode.INTERNAL, f"cannot read {self._path(key)}: {e.strerror or e}"
            ) from e

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def _s3_code(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3VideoStore(VideoStore):
    """``s3://bucket/prefix`` on AWS S3 or any S3-compatible server (``AWS_ENDPOINT_URL``)."""

    has_urls = True

    def __init__(self, url: str) -> None:
        import boto3
        from botocore.config import Config

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise SystemExit(
                f"--video-url must be s3://BUCKET[/PREFIX] (or empty for the local folder), "
                f"got {url!r}"
            )
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        config = Config(
            connect_timeout=3,
            read_timeout=20,
            retries={"max_attempts": 2, "mode": "standard"},
            # Plain checksums every S3-compatible server understands.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # boto3 finds the endpoint, region and credentials itself: AWS_ENDPOINT_URL,
        # AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a config file
        # (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE: what the Kubernetes Secret mounts).
        self._client: Any = boto3.session.Session().client("s3", config=config)
        self.endpoint = str(self._client.meta.endpoint_url)
        self.describe = f"s3://{self.bucket}/{self.prefix} at {self.endpoint}"

    def key_for(self, job_id: str, fence: int) -> str:
        name = f"{job_id}/{max(fence, 1)}.mp4"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _unreachable(self, what: str, error: BaseException) -> VideoStoreError:
        return VideoStoreError(
            grpc.StatusCode.UNAVAILABLE,
            f"{what} {self.describe}: {error}; the object storage is unreachable or refused "
            "the request",
        )

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if _s3_code(e) in ("404", "NoSuchBucket", "403", "AccessDenied"):
                raise SystemExit(
                    f"the video bucket {self.describe} does not exist or these credentials "
                    f"cannot use it ({_s3_code(e)}); create the bucket or fix "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                ) from None
            log("video_store_unreachable", store=self.describe, error=str(e))
        except BotoCoreError as e:  # unreachable now: jobs retry their uploads; start anyway
            log("video_store_unreachable", store=self.describe, error=str(e))

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(MAX_PUT_TRIES):
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType="video/mp4"
                )
                return
            except (BotoCoreError, ClientError) as e:
                retryable = (
                    isinstance(e, BotoCoreError)
                    or _s3_code(e).startswith("5")
                    or (_s3_code(e) in ("SlowDown", "InternalError", "ServiceUnavailable"))
                )
                if not retryable or attempt == MAX_PUT_TRIES - 1:
                    raise VideoStoreError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the video was generated but could not be stored in {self.describe} "
                        f"after {attempt + 1} tries: {e}; no object was written; submit the "
                        "job again when the object storage is reachable",
                    ) from e
                log("video_upload_retry", key=key, attempt=attempt + 1, error=str(e))
                time.sleep(PUT_BACKOFF_S[attempt])

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return bytes(body.read())
        except ClientError as e:
            if _s3_code(e) in ("NoSuchKey", "404"):
                raise VideoMissing(f"s3://{self.bucket}/{key}") from None
            raise self._unreachable("cannot read the video from", e) from e
        except BotoCoreError as e:
            raise self._unreachable("cannot read the video from", e) from e

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            raise self._unreachable("cannot delete the video from", e) from e

    def url(self, key: str, ttl_s: int) -> str | None:
        return str(
            self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=ttl_s
            )
        )


def open_video_store(url: str, data_dir: Path) -> VideoStore:
    """``s3://…`` → S3; empty → ``<data_dir>/videos``."""
    if not url:
        return LocalVideoStore(data_dir / "videos")
    return S3VideoStore(url)
