"""The lake: Delta Lake tables under ``<lake>/<layer>/<table>/`` and the ``<lake>/_publish`` log.

This module is the only one that knows the lake's layout. Everything else names tables as
``(layer, table)`` and goes through ``Lake``: Spark reads (``read``), reads without Spark through
the ``deltalake`` package (``delta``, ``arrow``, ``rows``), commits (``transaction``, ``commit``),
the ``_publish`` log and the writer locks.

**Commits.** Each publish of a table is one Delta commit (``overwrite``, ``append``, or an
overwrite of the rows matching ``replaceWhere``), so a reader sees the previous complete version
or the new one, and a killed run leaves no partial table.

**Staged, checked, then committed** (``transaction``): tables that pass a quality gate are first
written as Parquet under ``<lake>/_staging/<layer>/<table>/<txn>/``, where the gate
(``checks.PublishCheck``) reads them; the block commits them to Delta only if it ends without an
exception, and removes the staged files otherwise. Staging left by a killed run is removed by the
next publish of the table.

**The _publish log** (CONTRACT.md §1). After its commits, a writer appends one row per table it
committed -- ``run_id, layer, table, version, rows, published_at`` -- in one commit of the Delta
table ``<lake>/_publish``. A dataset's silver and quarantine go into the same ``_publish`` commit,
so a reader that needs them to add up reads the versions the latest such pair names. A run killed
between the silver and the quarantine commit leaves ``_publish`` naming the previous pair; the
next run of the dataset rewrites both and logs the new pair.

**Locks** (``step_lock``). On a local file system Delta's log store may let two commits written at
the same moment overwrite each other, so every asset step takes, before it reads anything, an
exclusive ``flock`` on each table it writes and a shared one on each table it reads, in one global
order (no deadlock), until it has committed. A step that cannot get its locks waits (logging who
holds them) up to ``ETL_LAKE_LOCK_TIMEOUT_S`` seconds (default 1800), then fails naming the table
and the holder. ``flock`` locks die with their process, so a killed run never leaves a stale lock.
``_publish`` and ``gold/audit_log`` are appended through ``deltalake``, whose commits are an atomic
create-if-absent (locally a no-replace rename, on S3 a conditional ``PutObject``), so they need
no lock.

**S3 lakes** (``ETL_LAKE_URI=s3://bucket/prefix``). Spark reads and writes the tables through
``s3://`` (S3A in the sessions this platform creates, EMRFS on EMR), ``deltalake`` through its own
S3 client with the same standard AWS settings (``delta_storage_options``). There is no ``flock``
on S3, and Delta-Spark's S3 log store is safe for one writing driver per table only: the assets
carry Dagster pools (one per written table, limit 1 in the instance configuration), so one
Dagster instance never runs two writers of a table at once.

**Delta settings** for every table: reader version 1 (no deletion vectors, column mapping or v2
checkpoints, so the ``deltalake`` package reads every table), and file statistics only on
columns that hold no PII (``delta.dataSkippingStatsColumns``): never raw or normalised PII, hashes,
ciphertexts or ``_corrupt_record``, because ``_delta_log`` outlives VACUUM.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from etl_assets.storage import parse_uri

log = logging.getLogger(__name__)

PUBLISH = "_publish"
PUBLISH_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("layer", pa.string()),
        ("table", pa.string()),
        ("version", pa.int64()),
        ("rows", pa.int64()),
        ("published_at", pa.timestamp("us", tz="UTC")),
    ]
)
# table properties of every table this platform creates (see the module docstring)
TABLE_PROPERTIES = {
    "delta.enableDeletionVectors": "false",
    "delta.minReaderVersion": "1",
    "delta.minWriterVersion": "2",
}
_NO_STATS_SUFFIXES = ("_enc", "_hash", "_norm")


def _append(path: str, rows: pa.Table, storage_options: dict | None = None, metadata: dict | None = None,
            attempts: int = 20) -> None:
    """A blind append through ``deltalake``. Appends never conflict with each other: a writer that
    loses the race for a version number retries on the next one. Only the table's creation can
    conflict (writers creating it at once, or appending while it is created): the loser appends
    to the winner's table."""
    from deltalake import CommitProperties, DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError

    for attempt in range(attempts):
        creating = not DeltaTable.is_deltatable(path, storage_options=storage_options)
        try:
            write_deltalake(path, rows, mode="append", configuration=TABLE_PROPERTIES if creating else None,
                            commit_properties=CommitProperties(max_commit_retries=1000, custom_metadata=metadata),
                            storage_options=storage_options)
            return
        except CommitFailedError as e:
            if not any(m in str(e) for m in ("Metadata changed", "Protocol changed")) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


class LakeLockTimeout(TimeoutError):
    """A table stayed locked by another run for longer than the timeout."""


class LakeTableError(RuntimeError):
    """A lake table that exists but cannot be read as a Delta table; the message names it."""


def stats_columns(schema, pii: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The columns of a Spark schema that Delta may keep min/max statistics of: no PII in any
    stored form, no raw lines, and only the types Delta's data skipping supports."""
    from pyspark.sql import types as T

    eligible = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DateType,
                T.TimestampType, T.TimestampNTZType, T.StringType, T.DecimalType)
    return [
        f.name for f in schema.fields
        if isinstance(f.dataType, eligible) and f.name not in pii
        and not f.name.endswith(_NO_STATS_SUFFIXES) and not f.name.startswith("_corrupt_record")
    ]


@dataclass(frozen=True)
class Write:
    df: DataFrame
    layer: str
    table: str
    mode: str = "overwrite"  # overwrite | append
    replace_where: str | None = None  # overwrite only the rows matching this predicate
    pii: frozenset[str] = frozenset()  # columns kept out of the file statistics


@dataclass
class Staged:
    """The staged Parquet folders of one ``Lake.transaction`` (in the order of its writes) and,
    after the block, the commits' stats (``version``, ``rows``, files and bytes)."""

    txn: str
    paths: list[str]
    stats: list[dict]


def delta_storage_options(environ: dict | None = None) -> dict[str, str]:
    """What ``deltalake`` needs beyond the standard AWS variables it reads itself: the endpoint
    (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, plain HTTP allowed for a local one such as moto
    or MinIO, path-style) and S3's conditional writes, which make its commits safe."""
    env = os.environ if environ is None else environ
    opts = {"conditional_put": "etag"}
    endpoint = (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").strip()
    if endpoint:
        opts["AWS_ENDPOINT_URL"] = endpoint
        opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
        if endpoint.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    region = (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip()
    if region:
        opts["AWS_REGION"] = region
    return opts


class Lake:
    """The lake at ``uri``: a local folder (``/path``, ``file://``) or an S3 prefix (``s3://``)."""

    def __init__(self, uri: str, owner: str | None = None):
        scheme, location = parse_uri(uri)
        self.local = scheme == "file"
        # local: the folder; S3: None (nothing may treat an S3 lake as a folder)
        self.root = Path(location) if self.local else None
        self.base = location if self.local else f"s3://{location}"
        self.uri = uri
        self.owner = owner or f"pid {os.getpid()}"  # who holds our locks (a run id, when known)
        self._held: dict[tuple[str, str], int] = {}  # locks this process holds, table -> mode
        self._options = None if self.local else delta_storage_options()
        self._s3 = None

    def _client(self):
        """boto3 for the S3 lake's own listing and deletes (the landing zone's client settings)."""
        if self._s3 is None:
            from etl_assets.s3 import LandingS3Resource

            self._s3 = LandingS3Resource.from_env().get_client()
        return self._s3

    def _at(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    def check(self) -> None:
        """Fail early, naming ``ETL_LAKE_URI``, when the lake cannot be used (an S3 bucket that
        does not exist or cannot be reached with the credentials at hand)."""
        if self.local:
            return
        bucket = self.base[len("s3://"):].split("/", 1)[0]
        try:
            self._client().head_bucket(Bucket=bucket)
        except Exception as e:  # noqa: BLE001 - botocore raises many kinds
            raise ValueError(f"ETL_LAKE_URI={self.uri!r}: cannot use bucket {bucket!r}: {e}") from e

    # ---------------------------------------------------------------- layout
    def path(self, layer: str, table: str) -> str:
        return self._at(layer, table)

    def _is_delta(self, uri: str) -> bool:
        if self.local:
            return Path(uri, "_delta_log").is_dir()
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(uri, storage_options=self._options)

    def exists(self, layer: str, table: str) -> bool:
        return self._is_delta(self.path(layer, table))

    def tables(self) -> list[tuple[str, str]]:
        """``(layer, table)`` of every published table (``_publish`` and bookkeeping excluded)."""
        if not self.local:
            return [(layer, t) for layer, t in self._s3_children() if self.exists(layer, t)]
        out = []
        for layer_dir in sorted(p for p in self.root.glob("*") if p.is_dir() and not p.name.startswith("_")):
            for t in sorted(layer_dir.iterdir()):
                if (t / "_delta_log").is_dir():
                    out.append((layer_dir.name, t.name))
        return out

    def _s3_children(self) -> list[tuple[str, str]]:
        bucket, _, prefix = self.base[len("s3://"):].partition("/")
        prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        client, out = self._client(), []
        layers = client.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/").get("CommonPrefixes", [])
        for lp in layers:
            layer = lp["Prefix"][len(prefix):].strip("/")
            if layer.startswith("_"):
                continue
            for tp in client.list_objects_v2(Bucket=bucket, Prefix=lp["Prefix"], Delimiter="/").get("CommonPrefixes", []):
                out.append((layer, tp["Prefix"][len(lp["Prefix"]):].strip("/")))
        return sorted(out)

    def _remove(self, uri: str) -> None:
        """Delete a staging folder (local) or prefix (S3)."""
        if self.local:
            shutil.rmtree(uri, ignore_errors=True)
            return
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        client = self._client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    def _missing(self, layer: str, table: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"table {layer}/{table} has not been published yet under {self.base}; "
            f"materialize {layer}/{table} first"
        )

    # ----------------------------------------------------------------- reads
    def read(self, spark: SparkSession, layer: str, table: str, version: int | None = None) -> DataFrame:
        """The table as a Spark DataFrame (its latest version, or ``version``)."""
        if not self.exists(layer, table):
            raise self._missing(layer, table)
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        try:
            return reader.load(self.path(layer, table))
        except Exception as e:  # noqa: BLE001 - a damaged log: name the table
            if type(e).__name__ in ("AnalysisException", "Py4JJavaError", "SparkConnectGrpcException") or "Delta" in str(e):
                raise LakeTableError(f"lake table {layer}/{table} ({self.path(layer, table)}) cannot be read "
                                     f"as a Delta table: {str(e).splitlines()[0][:400]}") from e
            raise

    def delta(self, layer: str, table: str, version: int | None = None):
        """The table as a ``deltalake.DeltaTable`` (no Spark)."""
        from deltalake import DeltaTable

        if not self.exists(layer, table):
            raise self._missing(layer, table)
        try:
            return DeltaTable(self.path(layer, table), version=version, storage_options=self._options)
        except Exception as e:  # noqa: BLE001
            raise LakeTableError(f"lake table {layer}/{table} ({self.path(layer, table)}) cannot be read "
                                 f"as a Delta table: {e}") from e

    def arrow(self, layer: str, table: str, columns: list[str] | None = None, version: int | None = None) -> pa.Table:
        """The table's rows as a pyarrow Table, read by ``deltalake``."""
        return self.delta(layer, table, version).to_pyarrow_table(columns=columns)

    def rows(self, layer: str, table: str, version: int | None = None) -> int:
        """Row count from the Delta log's per-file statistics (no data file is read)."""
        dt_ = self.delta(layer, table, version)
        actions = dt_.get_add_actions(flatten=True)
        if actions.num_rows == 0:
            return 0
        counts = actions.column("num_records").to_pylist()
        if any(c is None for c in counts):  # a file without statistics: count the data
            return dt_.to_pyarrow_dataset().count_rows()
        return int(sum(counts))

    def version(self, layer: str, table: str) -> int | None:
        return self.delta(layer, table).version() if self.exists(layer, table) else None

    def published(self) -> pa.Table:
        """Every ``_publish`` row (empty when nothing was published)."""
        if not self._is_delta(self._at(PUBLISH)):
            return PUBLISH_SCHEMA.empty_table()
        from deltalake import DeltaTable

        return DeltaTable(self._at(PUBLISH), storage_options=self._options).to_pyarrow_table()

    # ---------------------------------------------------------------- ledgers
    def _ledger_path(self, name: str) -> str:
        return self._at("_ingest", name)

    def ledger(self, name: str) -> tuple[pa.Table, dict]:
        """A bookkeeping table (the ingest log of a dataset) and its latest commit's metadata;
        an empty table and ``{}`` when there is none."""
        from deltalake import DeltaTable

        path = self._ledger_path(name)
        if not self._is_delta(path):
            return pa.table({}), {}
        table = DeltaTable(path, storage_options=self._options)
        last = table.history(1)[0]
        return table.to_pyarrow_table(), {k: v for k, v in last.items() if isinstance(v, str)}

    def write_ledger(self, name: str, rows: pa.Table, predicate: str | None, metadata: dict[str, str]) -> None:
        """Replace the ledger's rows matching ``predicate`` (all rows when None) by ``rows``, in
        one commit that carries ``metadata``."""
        from deltalake import CommitProperties, write_deltalake

        path = self._ledger_path(name)
        if predicate is not None and not self._is_delta(path):
            predicate = None
        write_deltalake(path, rows, mode="overwrite", predicate=predicate, schema_mode=None,
                        configuration=TABLE_PROPERTIES if predicate is None else None,
                        commit_properties=CommitProperties(custom_metadata=metadata),
                        storage_options=self._options)

    # ------------------------------------------------------------------ locks
    def _lock_path(self, layer: str, table: str) -> Path:
        return self.root / "_locks" / layer / f"{table}.lock"

    @contextlib.contextmanager
    def step_lock(
        self,
        writes: list[tuple[str, str]] = (),
        reads: list[tuple[str, str]] = (),
        timeout_s: float | None = None,
        logger=log,
        owner: str | None = None,
    ):
        """Hold exclusive locks on ``writes`` and shared locks on ``reads`` (``(layer, table)``);
        ``owner`` (e.g. the run id) is shown to runs that wait for them. On an S3 lake there is
        no ``flock``: one writer per table is the Dagster pools' job (see the module docstring)."""
        if owner:
            self.owner = owner
        if not self.local:
            yield
            return
        if timeout_s is None:
            timeout_s = float(os.environ.get("ETL_LAKE_LOCK_TIMEOUT_S", "1800"))
        modes = {tuple(t): fcntl.LOCK_SH for t in reads}
        modes.update({tuple(t): fcntl.LOCK_EX for t in writes})
        for t, mode in modes.items():
            if t in self._held and self._held[t] != mode:
                raise RuntimeError(f"{'/'.join(t)} is already locked by this process in another mode")
        modes = {t: m for t, m in modes.items() if t not in self._held}  # re-entrant
        fds: list[tuple[tuple[str, str], int]] = []
        try:
            for table in sorted(modes):  # one global order: no deadlock between steps
                fds.append((table, self._acquire(table, modes[table], timeout_s, logger)))
                self._held[table] = modes[table]
            yield
        finally:
            for table, fd in reversed(fds):
                self._held.pop(table, None)
                os.close(fd)  # closing the descriptor releases the flock

    def _acquire(self, table: tuple[str, str], mode: int, timeout_s: float, logger) -> int:
        path = self._lock_path(*table)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        name = "/".join(table)
        start = time.monotonic()
        next_log = start
        try:
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                now = time.monotonic()
                holder = self._holder(path)
                if now - start >= timeout_s:
                    raise LakeLockTimeout(
                        f"{name} in lake {self.base} is locked by another run ({holder}) for more "
                        f"than {timeout_s:.0f}s (ETL_LAKE_LOCK_TIMEOUT_S); not reading or writing it"
                    )
                if now >= next_log:
                    logger.warning(f"waiting for {name}: locked by {holder}")
                    next_log = now + 30
                time.sleep(0.2)
            if mode == fcntl.LOCK_EX:
                info = {"owner": self.owner, "pid": os.getpid(), "host": socket.gethostname(),
                        "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _holder(path: Path) -> str:
        try:
            info = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "a reader"
        return f"{info.get('owner')}, pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"

    # --------------------------------------------------------------- commits
    def publish(self, df: DataFrame, layer: str, table: str, run_id: str = "", pii=frozenset()) -> dict:
        """Stage, then commit ``df`` as the new version of ``<layer>/<table>``; the commit's stats."""
        with self.transaction([Write(df, layer, table, pii=frozenset(pii))], run_id) as staged:
            pass
        return staged.stats[0]

    @contextlib.contextmanager
    def transaction(self, writes: list[Write], run_id: str = ""):
        """Stage every table (Parquet, invisible to readers) on entry and yield the ``Staged``
        folders; when the block ends without an exception, commit each to Delta and log them in
        one ``_publish`` commit; when it raises (a failed quality gate), remove the staged files:
        readers keep the previous versions.

        Takes the tables' exclusive locks unless this process holds them already (``step_lock``)."""
        tables = [(w.layer, w.table) for w in writes]
        with self.step_lock(writes=tables):
            staged = Staged(f"{int(time.time())}-{uuid.uuid4().hex[:12]}", [], [])
            try:
                for w in writes:
                    parent = self._at("_staging", w.layer, w.table)
                    self._remove(parent)  # we hold the table: anything staged here is a killed run's
                    path = f"{parent}/{staged.txn}"
                    staged.paths.append(path)
                    w.df.write.mode("overwrite").option("compression", "snappy").parquet(path)
                yield staged
                session = writes[0].df.sparkSession if writes else None
                for w, path in zip(writes, staged.paths):
                    frame = session.read.schema(w.df.schema).parquet(path)
                    staged.stats.append(self._commit(Write(frame, w.layer, w.table, w.mode, w.replace_where, w.pii)))
                self.log_publish(writes, staged.stats, run_id)
            finally:
                for path in staged.paths:
                    self._remove(path)

    def commit(self, writes: list[Write], run_id: str = "") -> list[dict]:
        """Commit each write straight to Delta (no staging, no gate), then log them in one
        ``_publish`` commit; the commits' stats."""
        with self.step_lock(writes=[(w.layer, w.table) for w in writes]):
            stats = [self._commit(w) for w in writes]
            self.log_publish(writes, stats, run_id)
        return stats

    def _commit(self, w: Write) -> dict:
        path = self.path(w.layer, w.table)
        writer = w.df.write.format("delta").mode(w.mode)
        if w.mode == "overwrite" and w.replace_where is None:
            writer = writer.option("overwriteSchema", "true")
        if w.replace_where is not None:
            writer = writer.option("replaceWhere", w.replace_where)
        creating = not self.exists(w.layer, w.table)
        if creating:  # table properties are set when the table is created
            for k, v in TABLE_PROPERTIES.items():
                writer = writer.option(k, v)
            writer = writer.option("delta.dataSkippingStatsColumns", ",".join(
                f"`{c}`" for c in stats_columns(w.df.schema, w.pii)))
        writer.save(path)
        return self.commit_stats(w.layer, w.table)

    def commit_stats(self, layer: str, table: str) -> dict:
        """The latest commit of a table: version, operation, rows, files and bytes added/removed."""
        table_ = self.delta(layer, table)
        last = table_.history(1)[0]
        metrics = {k: int(v) for k, v in (last.get("operationMetrics") or {}).items() if str(v).isdigit()}
        return {
            "version": int(table_.version()),
            "operation": last.get("operation"),
            "rows": self.rows(layer, table),
            "files": metrics.get("numFiles", metrics.get("numAddedFiles", 0)),
            "bytes": metrics.get("numOutputBytes", metrics.get("numAddedBytes", 0)),
            "files_removed": metrics.get("numRemovedFiles", 0),
            "bytes_removed": metrics.get("numRemovedBytes", 0),
            "rows_written": metrics.get("numOutputRows", metrics.get("numAddedRows", 0)),
        }

    def append(self, layer: str, table: str, rows: pa.Table, run_id: str = "") -> dict:
        """Append a few driver-side rows (``deltalake``, no Spark job) in one commit, then its
        ``_publish`` row; the commit's version and the table's rows in that version."""
        marker = uuid.uuid4().hex
        path = self.path(layer, table)
        _append(path, rows, self._options, {"etl_append_id": marker})
        version = self._committed_version(layer, table, marker)
        stats = {"version": version, "rows": self.rows(layer, table, version)}
        self.log_publish([(layer, table)], [stats], run_id)
        return stats

    def _committed_version(self, layer: str, table: str, marker: str, newest: int = 200) -> int:
        """The version of the commit carrying ``etl_append_id=marker``, from the commit files
        themselves (other writers may have committed after it; ``deltalake``'s history numbers
        entries from its snapshot, which can be older than its listing)."""
        log_dir = f"{self.path(layer, table)}/_delta_log"
        for version, read in self._commit_files(log_dir)[-newest:][::-1]:
            for line in read().splitlines():
                if marker in line and json.loads(line).get("commitInfo", {}).get("etl_append_id") == marker:
                    return version
        raise RuntimeError(f"{layer}/{table}: the commit {marker} is not among its last {newest} versions")

    def _commit_files(self, log_dir: str) -> list[tuple[int, Callable[[], str]]]:
        """``(version, reader of the file's text)`` of every JSON commit file in a ``_delta_log``."""
        if self.local:
            return sorted((int(p.stem), p.read_text) for p in Path(log_dir).glob("*.json") if p.stem.isdigit())
        bucket, _, prefix = log_dir[len("s3://"):].partition("/")
        client, out = self._client(), []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            for o in page.get("Contents", []):
                name = o["Key"].rsplit("/", 1)[-1]
                if name.endswith(".json") and name[:-5].isdigit():
                    key = o["Key"]
                    out.append((int(name[:-5]), lambda k=key: client.get_object(Bucket=bucket, Key=k)["Body"].read().decode()))
        return sorted(out, key=lambda x: x[0])

    # ------------------------------------------------------------ maintenance
    def _sql_table(self, layer: str, table: str) -> str:
        return "delta.`" + self.path(layer, table).replace("`", "``") + "`"

    def restore(self, spark: SparkSession, layer: str, table: str, version: int, run_id: str = "") -> dict:
        """Roll ``layer/table`` back to ``version`` by time travel (Delta RESTORE: a new commit,
        the history stays); logged in ``_publish``. The commit's stats."""
        with self.step_lock(writes=[(layer, table)]):
            current = self.version(layer, table)
            if current is None:
                raise self._missing(layer, table)
            if not 0 <= version <= current:
                raise ValueError(f"{layer}/{table}: no version {version} to restore (versions 0..{current})")
            spark.sql(f"RESTORE TABLE {self._sql_table(layer, table)} TO VERSION AS OF {int(version)}").collect()
            return self._logged(layer, table, run_id)

    def optimize(self, spark: SparkSession, layer: str, table: str, run_id: str = "") -> dict:
        """Compact the table's small files (Delta OPTIMIZE; no data change); logged in ``_publish``
        when it committed."""
        with self.step_lock(writes=[(layer, table)]):
            before = self.version(layer, table)
            spark.sql(f"OPTIMIZE {self._sql_table(layer, table)}").collect()
            return self._logged(layer, table, run_id) if self.version(layer, table) != before else {}

    def vacuum(self, spark: SparkSession, layer: str, table: str, retention_hours: float, run_id: str = "") -> dict:
        """Delete the files no version younger than ``retention_hours`` needs (Delta VACUUM),
        never those of the version the latest ``_publish`` row of the table names: the retention
        is stretched to cover it. ``{"retention_hours", "kept_version"}``."""
        with self.step_lock(writes=[(layer, table)]):
            named = [r for r in self.published().to_pylist() if (r["layer"], r["table"]) == (layer, table)]
            hours = float(retention_hours)
            kept = None
            if named:
                kept = max(named, key=lambda r: r["published_at"])["version"]
                # the files of version `kept` start being removed by the commit after it: keep
                # every file removed since then (the current version's files are never removed)
                superseded = self._commit_time(layer, table, kept + 1)
                if superseded is not None:
                    age = (dt.datetime.now(dt.timezone.utc) - superseded).total_seconds() / 3600
                    hours = max(hours, age)
            before = self.version(layer, table)
            if hours < 168:  # below Delta's default of 7 days: the check that refuses it is lifted
                spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
            hours = math.ceil(hours)  # Delta rounds RETAIN to whole hours: round up, never down
            # VACUUM lists the table's files in a Spark job of parallelPartitionDiscovery.parallelism
            # tasks (10,000 by default: 30-50 s of empty tasks on a small machine); the session's
            # shuffle partitions fit the cluster it runs on
            spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.parallelism",
                           spark.conf.get("spark.sql.shuffle.partitions"))
            spark.sql(f"VACUUM {self._sql_table(layer, table)} RETAIN {hours} HOURS").collect()
            if self.version(layer, table) != before:  # VACUUM START/END commits
                self._logged(layer, table, run_id)
            return {"retention_hours": hours, "kept_version": kept}

    def _commit_time(self, layer: str, table: str, version: int) -> dt.datetime | None:
        for v, read in self._commit_files(f"{self.path(layer, table)}/_delta_log"):
            if v == version:
                for line in read().splitlines():
                    info = json.loads(line).get("commitInfo")
                    if info and "timestamp" in info:
                        return dt.datetime.fromtimestamp(info["timestamp"] / 1000, dt.timezone.utc)
        return None

    def _logged(self, layer: str, table: str, run_id: str) -> dict:
        stats = self.commit_stats(layer, table)
        self.log_publish([(layer, table)], [stats], run_id)
        return stats

    def log_publish(self, tables, stats: list[dict], run_id: str = "") -> None:
        """Append one ``_publish`` row per committed table, all in one Delta commit."""
        now = dt.datetime.now(dt.timezone.utc)
        rows = [
            {"run_id": run_id or self.owner, "layer": t.layer if isinstance(t, Write) else t[0],
             "table": t.table if isinstance(t, Write) else t[1], "version": int(s["version"]),
             "rows": int(s["rows"]), "published_at": now}
            for t, s in zip(tables, stats)
        ]
        if rows:
            _append(self._at(PUBLISH), pa.Table.from_pylist(rows, schema=PUBLISH_SCHEMA), self._options)
