"""Exactly-once bronze ingestion: run modes, the per-dataset manifest and its commit protocol.

Run modes (``BronzeConfig``, run config of every ``bronze/<dataset>`` asset)::

    ops:
      bronze__orders:
        config:
          mode: incremental          # full (default) | incremental | days
          days: []                   # mode=days: the dt folders to re-ingest, e.g. ["2026-11-02"]

- ``full`` (the default, what ``etl_all`` does): bronze is rebuilt from every landed file, exactly
  as a fresh run; the manifest is reset to the object versions that were read.
- ``incremental`` (what ``landing_arrival_sensor`` requests): only object versions (key + ETag)
  not in the manifest are read. A key seen before with another ETag (an overwritten object)
  replaces the rows of its previous version, so bronze always holds each landed object's current
  content once. Nothing new: the step publishes nothing and reports no materialization, so
  nothing downstream runs.
- ``days``: the rows of the given ``dt`` folders are replaced by a fresh read of those folders
  (files deleted from them disappear, re-delivered ones appear); other days are untouched. The
  result equals a fresh run over the current landing zone.

**How appending keeps ``Lake.publish``'s atomicity, without rewriting bronze.** Every bronze
file holds the rows of ONE ``dt`` (the write is partitioned by ``_dt``; the files are then
flattened into the table folder as ``<dt>-<token>-<n>.parquet``, so readers see the same
unpartitioned table with the same columns). A run publishes, through the ordinary
``Lake.publish`` (staging + one atomic directory exchange), a new version made of

- the previous version's files that stay as they are, as **hard links** (no byte is copied),
- the files this run writes: the rows of the newly read objects, plus -- only for the days
  concerned -- the kept rows of a day whose files must change: a day with an overwritten
  object (its files are rewritten without that object's previous rows) and a day that would
  otherwise exceed ``ETL_BRONZE_MAX_FILES_PER_DAY`` files (default 8; compacted into one file).
  A ``days`` run drops the files of the given days and writes their fresh read.

So the cost of a run is the new rows (plus at most the days it replaces), not the table: the
previous version is never read. Readers see the previous or the new version, never a partial
append; kept rows keep their original ``_ingested_at``/``_run_id``.

**The manifest** is sharded per ``dt`` so that every write is bounded by what a run changes:

- ``<lake>/_manifests/bronze/<dataset>/<dt>.json`` (one per day): the object versions landed
  under that ``dt`` folder (key -> etag, size, dt, last_modified, run_id) and the bronze files
  holding that day's rows. A run rewrites only the shards of the days it touched.
- ``<lake>/_manifests/bronze/<dataset>.json`` (the head, constant size): revision, last run,
  the digest and number of the live table's files, and ``pending`` (below).

It changes only under an exclusive per-dataset lock (``<dataset>.lock``, ``flock``), so two runs
never ingest the same dataset at once, with a write-ahead protocol:

1. the new version is staged (Spark write + hard links); ``pending`` = {run, the digests of the
   live table's files before and after, the new content of every touched shard} is written into
   the head (atomically: temp file + fsync + ``os.replace``);
2. ``Lake.publish`` swaps in the new bronze version;
3. the touched shards are written, then the head is committed (``pending`` cleared, the new
   table digest).

A run that fails before 2 leaves the old table and old shards: its files are not marked
ingested and the next run ingests them. A run killed between 2 and 3 is recovered by the next
run: the live files match ``pending``'s "after" digest, so the publish happened and the pending
shards are written -- the files are not ingested twice. If the manifest does not describe the
live table (missing, older format, or the table was replaced by other means), incremental and
days runs fall back to a full rebuild, which is always correct.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dagster import Config
from pydantic import Field
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl_assets.lake import Lake, LakeLockTimeout, write_durably
from etl_assets.registry import Dataset
from etl_assets.storage import LandedFile, LandingStore
from etl_assets.transforms.bronze import BronzeRead, bronze_schema, read_bronze

log = logging.getLogger(__name__)

MANIFEST_VERSION = 2  # 1: one file listing every object (read as "no manifest": full rebuild)
NO_DT = "none"  # the day of rows without a ``_dt`` (cannot happen for files under dt= folders)
PART_COLUMN = "_bronze_day"  # write-time only: partitions the staged write, never in the table
LINEAGE_COLUMNS = ("_source_file", "_dt", "_ingested_at", "_run_id")
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BronzeConfig(Config):
    """How a bronze run picks the landed files it reads (see ``etl_assets/ingest.py``)."""

    mode: Literal["full", "incremental", "days"] = Field(
        default="full",
        description="full: rebuild from every landed file (default, same as a fresh run); "
        "incremental: only object versions (key+ETag) not ingested yet; "
        "days: re-ingest the dt folders listed in `days`.",
    )
    days: list[str] = Field(
        default_factory=list,
        description="mode=days only: dt folders (YYYY-MM-DD) whose rows are replaced by a fresh read.",
    )


class IngestConfigError(ValueError):
    pass


def validate_config(cfg: BronzeConfig) -> list[str]:
    days = list(dict.fromkeys(d.strip() for d in cfg.days))
    if cfg.mode != "days":
        if days:
            raise IngestConfigError(f"`days` is only used with mode: days (got mode: {cfg.mode})")
        return []
    if not days:
        raise IngestConfigError("mode: days needs a non-empty `days` list of YYYY-MM-DD")
    for d in days:
        try:
            if not DAY_RE.match(d):
                raise ValueError
            dt.date.fromisoformat(d)
        except ValueError:
            raise IngestConfigError(f"days: {d!r} is not a YYYY-MM-DD date") from None
    return sorted(days)


def version_digest(files) -> str:
    """A digest of object versions: sha256 over sorted ``key<TAB>etag`` lines."""
    h = hashlib.sha256()
    for key, etag in sorted((f.key, f.etag) if isinstance(f, LandedFile) else f for f in files):
        h.update(f"{key}\t{etag}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------
def max_files_per_day() -> int:
    raw = os.environ.get("ETL_BRONZE_MAX_FILES_PER_DAY", "").strip()
    n = int(raw) if raw else 8
    if n < 1:
        raise ValueError(f"ETL_BRONZE_MAX_FILES_PER_DAY={raw!r}: expected an integer >= 1")
    return n


def files_digest(files: list[str] | None) -> str | None:
    """A digest of a table's file list (None: no table)."""
    if files is None:
        return None
    return hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass
class Shard:
    """One day of a dataset's manifest: the object versions of its dt folder, its bronze files."""

    dt: str
    entries: dict[str, dict] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def to_obj(self) -> dict:
        return {"dt": self.dt, "entries": self.entries, "files": sorted(self.files)}

    @classmethod
    def from_obj(cls, raw: dict) -> "Shard":
        return cls(dt=raw["dt"], entries=dict(raw.get("entries") or {}), files=list(raw.get("files") or []))


@dataclass
class Manifest:
    dataset: str
    shards: dict[str, Shard] = field(default_factory=dict)
    table_digest: str | None = None
    table_file_count: int = 0
    pending: dict | None = None
    revision: int = 0
    updated_at: str | None = None
    last_run_id: str | None = None

    @property
    def entries(self) -> dict[str, dict]:
        """Every ingested object version (key -> entry), all days."""
        out: dict[str, dict] = {}
        for d in sorted(self.shards):
            out.update(self.shards[d].entries)
        return out

    def head_json(self) -> str:
        return _dumps(
            {
                "format": MANIFEST_VERSION,
                "dataset": self.dataset,
                "revision": self.revision,
                "updated_at": self.updated_at,
                "last_run_id": self.last_run_id,
                "table": {"digest": self.table_digest, "files": self.table_file_count},
                "pending": self.pending,
            }
        )

    def versions(self) -> set[tuple[str, str]]:
        return {(k, v["etag"]) for k, v in self.entries.items()}


def _entry(f: LandedFile, run_id: str) -> dict:
    return {"etag": f.etag, "size": f.size, "dt": f.dt, "last_modified": round(f.last_modified, 3),
            "run_id": run_id}


def table_files(lake: Lake, layer: str, table: str) -> list[str] | None:
    """The Parquet files of the live table (relative paths), None when it does not exist."""
    root = Path(lake.path(layer, table))
    if not root.is_dir():
        return None
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))


class ManifestStore:
    """The head ``<lake>/_manifests/bronze/<dataset>.json``, the day shards
    ``<dataset>/<dt>.json``, atomic writes and a per-dataset lock.

    ``writes`` records the size in bytes of every file this store wrote (head and shards)."""

    def __init__(self, lake: Lake, dataset: str, layer: str = "bronze"):
        self.dir = Path(lake.root) / "_manifests" / layer
        self.dataset = dataset
        self.path = self.dir / f"{dataset}.json"
        self.shard_dir = self.dir / dataset
        self.lock_path = self.dir / f"{dataset}.lock"
        self.writes: list[int] = []

    def shard_path(self, day: str) -> Path:
        return self.shard_dir / f"{day}.json"

    def load(self) -> Manifest | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            raw = json.loads(text)
            if raw.get("format") != MANIFEST_VERSION:
                raise ValueError(f"manifest format {raw.get('format')!r}, this build reads {MANIFEST_VERSION}")
            table = raw.get("table") or {}
            m = Manifest(
                dataset=raw["dataset"],
                table_digest=table.get("digest"),
                table_file_count=int(table.get("files") or 0),
                pending=raw.get("pending"),
                revision=int(raw.get("revision") or 0),
                updated_at=raw.get("updated_at"),
                last_run_id=raw.get("last_run_id"),
            )
            if self.shard_dir.is_dir():
                for p in sorted(self.shard_dir.glob("*.json")):
                    shard = Shard.from_obj(json.loads(p.read_text(encoding="utf-8")))
                    if shard.dt != p.stem:
                        raise ValueError(f"{p.name} describes dt {shard.dt!r}")
                    m.shards[shard.dt] = shard
            return m
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            # Unreadable bookkeeping is never trusted: the caller falls back to a full rebuild.
            log.warning("ignoring unreadable manifest %s: %s", self.path, e)
            return None

    def _write(self, path: Path, text: str) -> None:
        self.writes.append(write_durably(path, text))

    def save(self, m: Manifest) -> None:
        """Write the head (constant size plus ``pending``)."""
        m.updated_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self._write(self.path, m.head_json())

    def write_shards(self, shards: dict, replace_all: bool = False) -> None:
        """Write the given day shards (a ``None`` value deletes that day's shard); with
        ``replace_all``, delete every other shard too. Idempotent (recovery repeats it)."""
        for day, raw in sorted(shards.items()):
            if raw is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.shard_path(day))
            else:
                self._write(self.shard_path(day), _dumps(raw))
        if replace_all and self.shard_dir.is_dir():
            for p in self.shard_dir.glob("*.json"):
                if p.stem not in shards:
                    p.unlink()

    @contextlib.contextmanager
    def lock(self, timeout_s: float | None = None):
        """Exclusive lock of this dataset's bronze table and manifest (released on process exit)."""
        if timeout_s is None:
            timeout_s = float(os.environ.get("ETL_INGEST_LOCK_TIMEOUT_S", "1800"))
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise LakeLockTimeout(
                            f"bronze/{self.dataset} is being ingested by another run "
                            f"(lock {self.lock_path} held for more than {timeout_s:.0f}s)"
                        ) from None
                    time.sleep(0.5)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def _apply_pending(m: Manifest, p: dict) -> None:
    if p.get("replace_all"):
        m.shards = {}
    for day, raw in p["shards"].items():
        if raw is None:
            m.shards.pop(day, None)
        else:
            m.shards[day] = Shard.from_obj(raw)
    m.table_digest = p["post_digest"]
    m.table_file_count = int(p.get("post_files") or 0)
    m.last_run_id = p.get("run_id")
    m.revision += 1


def recover(store: ManifestStore, m: Manifest | None, lake: Lake, logger=log) -> Manifest | None:
    """Resolve a ``pending`` entry left by a run that died around its publish."""
    if m is None or not m.pending:
        return m
    p = m.pending
    live = files_digest(table_files(lake, "bronze", store.dataset))
    if live == p.get("post_digest"):
        logger.warning(
            f"bronze/{store.dataset}: run {p.get('run_id')} published but did not commit its "
            "manifest; committing it now (its files are not ingested again)"
        )
        store.write_shards(p["shards"], replace_all=bool(p.get("replace_all")))
        _apply_pending(m, p)
    elif live == p.get("pre_digest"):
        logger.warning(
            f"bronze/{store.dataset}: run {p.get('run_id')} stopped before publishing; "
            "its files stay un-ingested"
        )
    else:
        # the table is neither the version before nor the one after: the head's digest no longer
        # matches, so the next incremental/days run rebuilds in full
        logger.warning(
            f"bronze/{store.dataset}: the table changed since run {p.get('run_id')} was pending; "
            "the next run rebuilds it in full"
        )
    m.pending = None
    store.save(m)
    return m


# ---------------------------------------------------------------------------------------------
# Table files: staging a version of hard links + new files, footer statistics
# ---------------------------------------------------------------------------------------------
def _link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link ``src`` to ``dst`` (True); copy when the filesystem cannot link (False)."""
    try:
        os.link(src, dst)
        return True
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        shutil.copy2(src, dst)
        return False


def flatten_days(staged: Path, token: str) -> dict[str, list[str]]:
    """Move the ``<PART_COLUMN>=<dt>/*.parquet`` files of a partitioned write to
    ``<dt>-<token>-<n>.parquet`` in ``staged`` itself; returns {dt: [file names]}."""
    from urllib.parse import unquote

    out: dict[str, list[str]] = {}
    prefix = PART_COLUMN + "="
    for sub in sorted(staged.iterdir()):
        if not (sub.is_dir() and sub.name.startswith(prefix)):
            continue
        day = unquote(sub.name[len(prefix):])
        names = out.setdefault(day, [])
        for src in sorted(sub.glob("*.parquet")):
            name = f"{day}-{token}-{len(names):03d}.parquet"
            os.rename(src, staged / name)
            names.append(name)
        shutil.rmtree(sub)
    return out


def footer_stats(paths, columns=()) -> tuple[int, dict[str, int] | None]:
    """Rows of Parquet files and the null count of ``columns``, from the footers alone (no data
    read). The null counts are None when a footer has no null-count statistics."""
    import pyarrow.parquet as pq

    rows = 0
    nulls: dict[str, int] | None = {c: 0 for c in columns}
    for path in paths:
        md = pq.ParquetFile(path).metadata
        rows += md.num_rows
        if nulls is None or not columns:
            continue
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for i in range(rg.num_columns):
                col = rg.column(i)
                if col.path_in_schema in nulls:
                    st = col.statistics
                    if st is None or not st.has_null_count:
                        nulls = None
                        break
                    nulls[col.path_in_schema] += st.null_count
            if nulls is None:
                break
    return rows, nulls


def table_footer_stats(lake: Lake, layer: str, table: str, columns=()) -> tuple[int, dict[str, int] | None]:
    root = Path(lake.path(layer, table))
    return footer_stats([root / f for f in (table_files(lake, layer, table) or [])], columns)


# ---------------------------------------------------------------------------------------------
# One bronze run
# ---------------------------------------------------------------------------------------------
@dataclass
class IngestOutcome:
    mode: str  # the mode actually run (a fallback to full shows here)
    requested_mode: str
    read: BronzeRead
    stats: dict
    files_read: int
    files_replaced: int
    rows_kept_from_previous: bool
    manifest_entries: int
    manifest_digest: str
    days: list[str]
    days_rewritten: list[str] = field(default_factory=list)
    manifest_writes: list[int] = field(default_factory=list)

    def metadata(self) -> dict:
        meta = {
            "ingest_mode": self.mode,
            "files_read": self.files_read,
            "files_replaced": self.files_replaced,
            "manifest_objects": self.manifest_entries,
            "manifest_digest": self.manifest_digest[:16],
            # what this run wrote vs. what it kept by hard link (see etl_assets/ingest.py)
            "rows_written": self.stats.get("rows_written", 0),
            "rows_reread": self.stats.get("rows_reread", 0),
            "files_linked": self.stats.get("files_linked", 0),
            "table_files": self.stats.get("table_files", 0),
            "manifest_bytes_written": sum(self.manifest_writes),
            "manifest_largest_write": max(self.manifest_writes, default=0),
        }
        if self.days_rewritten:
            meta["days_rewritten"] = ", ".join(self.days_rewritten)
        if self.mode != self.requested_mode:
            meta["ingest_mode_requested"] = self.requested_mode
        if self.days:
            meta["days"] = ", ".join(self.days)
        return meta


def unreadable_files(lake: Lake, store: LandingStore, ds: Dataset) -> dict[str, str]:
    """``{uri: why}``: the dataset's landed files that bronze does not hold because they cannot be
    read (rejected, as recorded in the manifest) or were refused at listing (unsafe keys, links)."""
    m = ManifestStore(lake, ds.name).load()
    out = {}
    for key, e in sorted((m.entries if m else {}).items()):
        if e.get("status") == "rejected":
            out[e.get("uri") or key] = e.get("error") or "rejected"
    out.update(store.refused(ds.landing_prefix + "/"))
    return out


def _keep_previous(prev: DataFrame, ds: Dataset, drop_uris: list[str], drop_days: list[str]) -> DataFrame:
    cond = F.lit(True)
    if drop_uris:
        cond = cond & ~F.coalesce(F.col("_source_file").isin(drop_uris), F.lit(False))
    if drop_days:
        cond = cond & ~F.coalesce(F.col("_dt").isin(drop_days), F.lit(False))
    return prev.where(cond)


def _write_empty(staged: Path, ds: Dataset, token: str) -> str:
    """An empty Parquet file with the bronze schema (a table whose every day was removed)."""
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import to_arrow_schema

    name = f"empty-{token}.parquet"
    pq.write_table(to_arrow_schema(bronze_schema(ds), timezone="UTC").empty_table(), staged / name)
    return name


def _day(f: LandedFile) -> str:
    return f.dt or NO_DT


def ingest_bronze(
    session: SparkSession,
    ds: Dataset,
    store: LandingStore,
    lake: Lake,
    run_id: str,
    cfg: BronzeConfig | None = None,
    logger=log,
) -> IngestOutcome | None:
    """Ingest one dataset into bronze under ``cfg``; None when incremental found nothing new."""
    cfg = cfg or BronzeConfig()
    days = validate_config(cfg)
    manifests = ManifestStore(lake, ds.name)
    with manifests.lock():
        m = recover(manifests, manifests.load(), lake, logger)
        live = table_files(lake, "bronze", ds.name)
        mode = cfg.mode
        if mode != "full":
            if live is None and (m is None or not m.shards):
                mode = "full"  # first ingestion: nothing to keep, nothing ingested
            elif m is None or m.table_digest != files_digest(live):
                logger.warning(
                    f"bronze/{ds.name}: the manifest does not describe the live table "
                    f"({'no manifest' if m is None else 'table changed outside ingestion'}); "
                    f"running a full rebuild instead of mode={cfg.mode}"
                )
                mode = "full"
        listed = store.dataset_files(ds)
        before: dict[str, Shard] = {} if (m is None or mode == "full") else m.shards
        known = {k: e for s in before.values() for k, e in s.entries.items()}
        drop_uris: list[str] = []
        drop_days: set[str] = set()  # days whose files are dropped (mode days)
        rewrite_days: set[str] = set()  # days whose kept rows are rewritten into new files
        if mode == "full":
            to_read = listed
        elif mode == "incremental":
            to_read = [f for f in listed if known.get(f.key, {}).get("etag") != f.etag]
            if not to_read:
                logger.info(f"bronze/{ds.name}: no object version that is not ingested yet; nothing to do")
                return None
            replaced = [f for f in to_read if f.key in known]
            drop_uris = [f.uri for f in replaced]
            rewrite_days = {_day(f) for f in replaced}
        else:  # days
            to_read = [f for f in listed if f.dt in days]
            drop_days = set(days)
        read_days = {_day(f) for f in to_read}
        # compaction: a day that would exceed the file budget is rewritten into one file
        limit = max_files_per_day()
        for d in read_days - drop_days - rewrite_days:
            if d in before and len(before[d].files) + 1 > limit:
                rewrite_days.add(d)
        touched = read_days | drop_days | rewrite_days

        # the new day shards (their `files` are completed once the staged files are known)
        shards_after: dict[str, Shard] = {}
        for d in sorted(touched):
            prev = before.get(d)
            entries = {} if (prev is None or d in drop_days) else dict(prev.entries)
            kept = [] if (prev is None or d in drop_days or d in rewrite_days) else list(prev.files)
            shards_after[d] = Shard(d, entries, kept)
        for f in to_read:
            shards_after[_day(f)].entries[f.key] = _entry(f, run_id)
        not_linked = {name for d in drop_days | rewrite_days if d in before for name in before[d].files}
        keep = [] if (mode == "full" or live is None) else [f for f in live if f not in not_linked]
        rewrite_files = [] if mode == "full" else sorted(
            name for d in rewrite_days if d in before for name in before[d].files
        )

        store.prefetch(to_read)  # S3: stage the objects in parallel
        read = read_bronze(session, ds, store, run_id, files=to_read)
        # a rejected file (unreadable content) is processed, once: the manifest records it with
        # its error, so it is not read again until a new version (ETag) of it lands
        by_uri = {f.uri: f for f in to_read}
        for uri, error in read.rejected.items():
            f = by_uri[uri]
            shards_after[_day(f)].entries[f.key].update(status="rejected", uri=uri, error=error)
        columns = [f.name for f in bronze_schema(ds).fields]
        df = read.df.select(*columns)
        live_root = Path(lake.path("bronze", ds.name))
        if rewrite_files:
            prev_df = session.read.parquet(*[str(live_root / f) for f in rewrite_files])
            df = _keep_previous(prev_df, ds, drop_uris, []).select(*columns).unionByName(df)
        # one file per day and run: every bronze file holds the rows of one dt
        out = df.withColumn(PART_COLUMN, F.coalesce(F.col("_dt"), F.lit(NO_DT))).repartition(PART_COLUMN)

        m = m or Manifest(dataset=ds.name)
        token = uuid.uuid4().hex[:12]
        pending_shards: dict[str, dict | None] = {}

        def prepare(staged: Path) -> dict:
            """Runs inside ``Lake.publish`` after the Spark write, before the exchange."""
            written = flatten_days(staged, token)
            new_names = [n for names in written.values() for n in names]
            linked = sum(_link_or_copy(live_root / name, staged / name) for name in keep)
            if linked < len(keep):
                logger.warning(f"bronze/{ds.name}: hard links unsupported here; {len(keep) - linked} files copied")
            if not new_names and not keep:
                new_names = [_write_empty(staged, ds, token)]  # an empty table still has a schema
            for d, names in written.items():
                shards_after.setdefault(d, Shard(d)).files.extend(names)
            pending_shards.update(
                {d: (s.to_obj() if (s.entries or s.files) else None) for d, s in shards_after.items()}
            )
            post = sorted(p.name for p in staged.glob("*.parquet"))
            rows_written, _ = footer_stats([staged / n for n in new_names])
            m.pending = {
                "run_id": run_id,
                "mode": mode,
                "pre_digest": files_digest(live),
                "post_digest": files_digest(post),
                "post_files": len(post),
                "replace_all": mode == "full",
                "shards": pending_shards,
            }
            manifests.save(m)  # write-ahead, just before the exchange
            return {"rows_written": rows_written, "files_linked": len(keep), "table_files": len(post)}

        # rows of previous files read again (rewritten days), from their footers
        rows_reread, _ = footer_stats([live_root / f for f in rewrite_files])
        stats = lake.publish(out, "bronze", ds.name, partition_by=[PART_COLUMN], prepare=prepare)
        stats["rows_reread"] = rows_reread
        manifests.write_shards(pending_shards, replace_all=mode == "full")  # commit: shards, then head
        _apply_pending(m, m.pending)
        m.pending = None
        manifests.save(m)

        store.release(to_read)  # S3: drop the staged copies
        entries_after = m.entries
        return IngestOutcome(
            mode=mode,
            requested_mode=cfg.mode,
            read=read,
            stats=stats,
            files_read=len(to_read),
            files_replaced=len(drop_uris),
            rows_kept_from_previous=bool(keep or rewrite_files),
            manifest_entries=len(entries_after),
            manifest_digest=version_digest((k, v["etag"]) for k, v in entries_after.items()),
            days=days,
            days_rewritten=sorted(rewrite_days),
            manifest_writes=list(manifests.writes),
        )
