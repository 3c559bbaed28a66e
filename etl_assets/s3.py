"""The landing zone on S3: ``S3LandingStore`` behind the ``LandingStore`` interface.

``ETL_LANDING_URI=s3://bucket/prefix`` selects it (``storage.landing_store``); everything else --
discovery, the arrival sensor, bronze ingestion -- uses the same ``LandingStore`` calls as a
local folder.

Connection settings are the standard AWS ones, read by boto3 itself: ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3`` (MinIO, moto, LocalStack), ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, web
identity / instance / container credentials, ``AWS_CA_BUNDLE``. The client is dagster-aws's
``S3Resource`` (``LandingS3Resource`` adds timeouts and a fast timestamp parser) with bounded
retries: botocore ``Config(retries={'total_max_attempts': ETL_S3_MAX_ATTEMPTS, 'mode': 'standard'})``,
i.e. exponential backoff with jitter on throttling, 5xx and connection errors.

| variable | meaning | default |
| --- | --- | --- |
| ``ETL_S3_MAX_ATTEMPTS`` | attempts per S3 call, the first included | ``5`` |
| ``ETL_S3_CONNECT_TIMEOUT_S`` / ``ETL_S3_READ_TIMEOUT_S`` | socket timeouts | ``5`` / ``60`` |
| ``ETL_S3_READ_MODE`` | ``s3a``: Spark reads ``s3a://`` itself (``spark_path``), no copies; ``stage``: boto3 downloads each object to a local staging folder and a local Spark reads that (a Spark without the S3A jars) | ``s3a`` |
| ``ETL_STAGING_DIR`` | parent of the per-run staging folders (needs room for the objects one run ingests) | system temp |
| ``ETL_S3_DOWNLOAD_THREADS`` | objects staged in parallel | ``8`` |

**Spark reading S3 directly (``ETL_S3_READ_MODE=s3a``, the default).** Sessions that ``SparkResource``
creates load hadoop-aws 3.5.0 with a slim set of AWS SDK v2 modules (``etl_assets/jars.py``,
cached by ``make install``) and ``s3a_spark_conf()`` below: the standard AWS settings boto3 reads
(``AWS_ENDPOINT_URL(_S3)`` with path-style access, ``AWS_REGION``, credentials through the SDK's
``DefaultCredentialsProvider``: environment, ``AWS_PROFILE``, web identity, container and
instance roles) mapped onto ``fs.s3a.*``, and ``s3://`` served by S3A too. On EMR, EMRFS
serves ``s3://`` natively with its own jars.
"""

from __future__ import annotations

import io
import logging
import os
import random
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config
from botocore.utils import parse_timestamp
from dagster_aws.s3 import S3Resource
from pydantic import Field

from etl_assets.storage import LandedFile, LandingError, LandingStore, StoreReadError, parse_uri, safe_key

log = logging.getLogger(__name__)

READ_MODES = ("stage", "s3a")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected an integer") from None
    if value < 1:
        raise ValueError(f"{name}={raw!r}: expected a positive integer")
    return value


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None


def read_mode() -> str:
    """``ETL_S3_READ_MODE``: ``s3a`` (default) or ``stage``."""
    mode = (os.environ.get("ETL_S3_READ_MODE") or "s3a").strip().lower()
    if mode not in READ_MODES:
        raise ValueError(f"ETL_S3_READ_MODE={mode!r}: expected one of {', '.join(READ_MODES)}")
    return mode


def _fast_timestamp(value: str) -> datetime:
    """ListObjectsV2 timestamps are ISO-8601 (``2026-11-27T17:15:02.000Z``); ``fromisoformat``
    parses them ~30x faster than botocore's dateutil default, which dominated listing time."""
    try:
        ts = datetime.fromisoformat(value)
        return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return parse_timestamp(value)  # RFC 1123 (HeadObject), epoch seconds


class LandingS3Resource(S3Resource):
    """dagster-aws ``S3Resource`` plus socket timeouts and the retry mode.

    Unset fields fall back to boto3's own resolution, so ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
    ``AWS_PROFILE`` and the credential chain apply unchanged."""

    retry_mode: str = Field(default="standard", description="botocore retry mode: standard | adaptive")
    connect_timeout_s: float = Field(default=5.0, description="socket connect timeout, seconds")
    read_timeout_s: float = Field(default=60.0, description="socket read timeout, seconds")
    max_pool_connections: int = Field(default=16, description="HTTP connection pool size")

    def get_client(self) -> Any:
        core = botocore.session.get_session()
        # Public botocore hook: replace the (slow) dateutil timestamp parser.
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_fast_timestamp)
        if self.profile_name:
            core.set_config_variable("profile", self.profile_name)
        session = boto3.session.Session(botocore_session=core)
        config = Config(
            # total_max_attempts counts the first request (botocore's `max_attempts` key would
            # count retries only: ETL_S3_MAX_ATTEMPTS=5 made 6 attempts)
            retries={"total_max_attempts": self.max_attempts, "mode": self.retry_mode},
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
            max_pool_connections=self.max_pool_connections,
        )
        if self.use_unsigned_session:
            from botocore import UNSIGNED

            config = config.merge(Config(signature_version=UNSIGNED))
        return session.client(
            "s3",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,  # None: boto3 honours AWS_ENDPOINT_URL(_S3)
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=config,
        )

    @classmethod
    def from_env(cls) -> "LandingS3Resource":
        return cls(
            max_attempts=_env_int("ETL_S3_MAX_ATTEMPTS", 5),
            connect_timeout_s=_env_float("ETL_S3_CONNECT_TIMEOUT_S", 5.0),
            read_timeout_s=_env_float("ETL_S3_READ_TIMEOUT_S", 60.0),
        )


def s3a_spark_conf(environ: dict | None = None) -> dict[str, str]:
    """Spark settings for ``s3a://`` and ``s3://`` with hadoop-aws + AWS SDK v2 (see module doc)."""
    env = os.environ if environ is None else environ
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",  # s3:// as S3A
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",  # FileContext (Delta log)
        "spark.hadoop.fs.s3a.aws.credentials.provider": env.get(
            "ETL_S3A_CREDENTIALS_PROVIDER",
            "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider",
        ),
        "spark.hadoop.fs.s3a.retry.limit": str(_env_int("ETL_S3_MAX_ATTEMPTS", 5)),
    }
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https")).lower()
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    return conf


class _RangedObject(io.RawIOBase):
    """A read-only seekable view of one S3 object version by ranged GETs; the last 64 KiB (where
    a Parquet footer lives) is fetched once and served from memory."""

    TAIL = 64 * 1024

    def __init__(self, store: S3LandingStore, f: LandedFile):
        self._store, self._f, self._size, self._pos = store, f, f.size, 0
        start = max(self._size - self.TAIL, 0)
        self._tail_start = start
        self._tail = store._get_range(f, start, self._size - 1) if self._size else b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self._size if n is None or n < 0 else min(self._pos + n, self._size)
        if end <= self._pos:
            return b""
        if self._pos >= self._tail_start:
            data = self._tail[self._pos - self._tail_start:end - self._tail_start]
        else:
            data = self._store._get_range(self._f, self._pos, end - 1)
        self._pos += len(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class S3LandingStore(LandingStore):
    """Landed files under ``s3://bucket/prefix``.

    ``list_files`` pages through ListObjectsV2 (1,000 keys a page) and returns every object with
    its ETag (quotes stripped) and LastModified. Keys with ``..``/``.``/empty segments are
    rejected (never listed, never staged) so nothing can escape the staging folder.
    ``local_path`` stages an object with ``download_file`` (streamed to disk in chunks, never held
    in memory) into a staging folder private to this store instance, re-downloading when the
    object's ETag changed; ``release`` deletes staged copies once they have been read.
    """

    def __init__(self, uri: str, s3: S3Resource | None = None, staging_dir: str | None = None,
                 mode: str | None = None):
        scheme, location = parse_uri(uri)
        if scheme != "s3":
            raise ValueError(f"S3LandingStore needs an s3:// URI, got {uri!r}")
        self.bucket, _, prefix = location.partition("/")
        self.prefix = prefix.strip("/")
        self.root_uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.mode = mode or read_mode()
        self._s3 = s3 or LandingS3Resource.from_env()
        self._client = None
        self._client_lock = threading.Lock()
        self._staging_parent = staging_dir or os.environ.get("ETL_STAGING_DIR") or None
        self._staging: str | None = None
        self._staged: dict[str, tuple[str, str]] = {}  # key -> (etag, local path)
        self._stage_lock = threading.Lock()
        self.rejected_keys: list[str] = []

    # -- client -------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._s3.get_client()
        return self._client

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    # -- listing ------------------------------------------------------------------------------
    def iter_files(self, prefix: str = "") -> Iterator[LandedFile]:
        """Every object under ``<root>/<prefix>``, page by page (lexicographic key order).

        Any S3 error (unreachable endpoint, access denied, missing bucket) propagates after the
        client's bounded retries: a partial listing is never returned as if it were complete."""
        root = f"{self.prefix}/" if self.prefix else ""
        self._clear_refused(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=root + prefix):
            for obj in page.get("Contents", ()):
                full = obj["Key"]
                key = full[len(root):]
                if full.endswith("/") and obj.get("Size", 0) == 0:
                    continue  # a "folder" placeholder object
                if not safe_key(key):
                    self.rejected_keys.append(full)
                    self._refuse(key, f"s3://{self.bucket}/{full}",
                                 "unsafe key ('..', '.' or empty segments): never staged or read")
                    log.warning("ignoring unsafe S3 key %r under %s", full, self.root_uri)
                    continue
                yield LandedFile(
                    key=key,
                    uri=f"s3://{self.bucket}/{full}",
                    size=int(obj.get("Size", 0)),
                    etag=str(obj.get("ETag", "")).strip('"'),
                    last_modified=obj["LastModified"].timestamp(),
                )

    def list_files(self, prefix: str = "") -> list[LandedFile]:
        return sorted(self.iter_files(prefix), key=lambda f: f.key)

    # -- staging ------------------------------------------------------------------------------
    def _staging_root(self) -> str:
        if self._staging is None:
            with self._stage_lock:
                if self._staging is None:
                    parent = self._staging_parent
                    if parent:
                        os.makedirs(parent, exist_ok=True)
                    self._staging = tempfile.mkdtemp(prefix="etl-s3-stage-", dir=parent)
                    weakref.finalize(self, _remove_tree, self._staging)
        return self._staging

    def local_path(self, f: LandedFile) -> str:
        if not safe_key(f.key):
            raise LandingError(f"{self.uri_of(f.key)}: unsafe key, refusing to stage it")
        staged = self._staged.get(f.key)
        if staged and staged[0] == f.etag and os.path.exists(staged[1]):
            return staged[1]
        root = self._staging_root()
        dest = Path(root, *f.key.split("/"))
        if not dest.resolve().is_relative_to(Path(root).resolve()):  # belt and braces
            raise LandingError(f"{self.uri_of(f.key)}: key escapes the staging folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.{threading.get_ident()}.part")
        try:
            # Streamed (ranged GETs for big objects) straight to disk, never whole in memory.
            self.client.download_file(self.bucket, self._object_key(f.key), str(tmp))
        except Exception as e:
            tmp.unlink(missing_ok=True)
            raise LandingError(f"{f.uri}: cannot stage object: {e}") from e
        os.replace(tmp, dest)
        with self._stage_lock:
            self._staged[f.key] = (f.etag, str(dest))
        return str(dest)

    def prefetch(self, files: Iterable[LandedFile]) -> None:
        """Stage many objects in parallel (S3 latency, not bandwidth, dominates small files);
        nothing to do when Spark reads them itself (``s3a``)."""
        todo = list(files)
        if not todo or self.mode == "s3a":
            return
        threads = min(_env_int("ETL_S3_DOWNLOAD_THREADS", 8), len(todo))
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3-stage") as pool:
            for _ in pool.map(self.local_path, todo):
                pass

    def release(self, files: Iterable[LandedFile] | None = None) -> None:
        """Delete staged copies (all of them when ``files`` is None)."""
        with self._stage_lock:
            keys = list(self._staged) if files is None else [f.key for f in files]
            for key in keys:
                entry = self._staged.pop(key, None)
                if entry:
                    Path(entry[1]).unlink(missing_ok=True)

    def spark_path(self, f: LandedFile) -> str:
        """What Spark reads: ``s3a://`` in ``s3a`` mode, else the staged copy."""
        if self.mode == "s3a":
            if not safe_key(f.key):
                raise LandingError(f"{self.uri_of(f.key)}: unsafe key")
            return f"s3a://{self.bucket}/{self._object_key(f.key)}"
        return self.local_path(f)

    def open_binary(self, f: LandedFile):
        """The object as a seekable file read by ranged GETs (a Parquet footer: two small GETs),
        or its staged copy when there is one."""
        staged = self._staged.get(f.key)
        if self.mode == "stage" or (staged and staged[0] == f.etag and os.path.exists(staged[1])):
            return open(self.local_path(f), "rb")
        if not safe_key(f.key):
            raise LandingError(f"{self.uri_of(f.key)}: unsafe key")
        return _RangedObject(self, f)

    def _get_range(self, f: LandedFile, start: int, end: int) -> bytes:
        """Bytes ``start..end`` (inclusive) of the object version ``f`` names. botocore retries a
        failed request but not a body cut off while streaming, so that is retried here (bounded)."""
        attempts = max(getattr(self._s3, "max_attempts", 5) or 1, 1)
        for attempt in range(1, attempts + 1):
            try:
                version = {"IfMatch": f'"{f.etag}"'} if f.etag else {}  # the version listed, not a newer one
                resp = self.client.get_object(Bucket=self.bucket, Key=self._object_key(f.key),
                                              Range=f"bytes={start}-{end}", **version)
                with resp["Body"] as body:
                    return body.read()
            except (botocore.exceptions.ResponseStreamingError, botocore.exceptions.ReadTimeoutError,
                    botocore.exceptions.IncompleteReadError) as e:
                if attempt == attempts:
                    raise StoreReadError(f"{f.uri}: cannot read bytes {start}-{end}: {e}") from e
                time.sleep(min(0.05 * 2 ** attempt, 2.0) * random.random())
            except Exception as e:
                raise StoreReadError(f"{f.uri}: cannot read bytes {start}-{end}: {e}") from e
        raise AssertionError("unreachable")

    def head(self, f: LandedFile, nbytes: int = 1 << 20) -> bytes:
        """The first ``nbytes`` of an object, e.g. to sniff a CSV header: from the staged copy
        when there is one (no second request), else a ranged GET."""
        staged = self._staged.get(f.key)
        if staged and staged[0] == f.etag and os.path.exists(staged[1]):
            with open(staged[1], "rb") as fh:
                return fh.read(nbytes)
        return self._get_range(f, 0, max(nbytes, 1) - 1)

    def __repr__(self) -> str:
        return f"S3LandingStore({self.root_uri!r}, mode={self.mode!r})"
