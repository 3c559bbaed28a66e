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

**How appending keeps ``Lake.publish``'s atomicity.** An incremental or ``days`` run does not add
files to the live table: it publishes, through the ordinary ``Lake.publish`` (write to staging,
one atomic directory exchange), a new complete version = the previous bronze rows that are kept
(read from the live version) UNION the rows of the newly read files. Readers see the previous or
the new version, never a partial append, and the previous rows keep their original
``_ingested_at``/``_run_id``. The cost is a rewrite of the bronze table per run (bronze is
stored compressed and is the smallest layer to rewrite; a hard-link based append is a possible
later optimisation).

**The manifest** ``<lake>/_manifests/bronze/<dataset>.json`` lists every ingested object version
(key -> etag, size, dt, last_modified, run_id) and the Parquet files of the bronze version it
describes. It changes only under an exclusive per-dataset lock (``<dataset>.lock``, ``flock``),
so two runs never ingest the same dataset at once, with a write-ahead protocol:

1. ``pending`` = {run, the live table's files before publishing, the entries after} is written
   (atomically: temp file + fsync + ``os.replace``);
2. ``Lake.publish`` swaps in the new bronze version;
3. the manifest is committed (entries := pending entries, ``table_files`` := the new files).

A run that fails before 2 leaves the old table and old entries: its files are not marked
ingested and the next run ingests them. A run killed between 2 and 3 is recovered by the next
run: the live files differ from ``pending.pre_files``, so the publish happened and the pending
entries are committed -- the files are not ingested twice. If the manifest does not describe the
live table (missing, or the table was replaced by other means), incremental and days runs fall
back to a full rebuild, which is always correct.
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dagster import Config
from pydantic import Field
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl_assets.lake import Lake, LakeLockTimeout
from etl_assets.registry import Dataset
from etl_assets.storage import LandedFile, LandingStore
from etl_assets.transforms.bronze import BronzeRead, bronze_schema, read_bronze

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
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
@dataclass
class Manifest:
    dataset: str
    entries: dict[str, dict] = field(default_factory=dict)
    table_files: list[str] | None = None
    pending: dict | None = None
    revision: int = 0
    updated_at: str | None = None
    last_run_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MANIFEST_VERSION,
                "dataset": self.dataset,
                "revision": self.revision,
                "updated_at": self.updated_at,
                "last_run_id": self.last_run_id,
                "table_files": self.table_files,
                "pending": self.pending,
                "entries": self.entries,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        raw = json.loads(text)
        if raw.get("format") != MANIFEST_VERSION:
            raise ValueError(f"unknown manifest format {raw.get('format')!r}")
        return cls(
            dataset=raw["dataset"],
            entries=raw.get("entries") or {},
            table_files=raw.get("table_files"),
            pending=raw.get("pending"),
            revision=int(raw.get("revision") or 0),
            updated_at=raw.get("updated_at"),
            last_run_id=raw.get("last_run_id"),
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
    """``<lake>/_manifests/bronze/<dataset>.json`` with atomic writes and a per-dataset lock."""

    def __init__(self, lake: Lake, dataset: str, layer: str = "bronze"):
        self.dir = Path(lake.root) / "_manifests" / layer
        self.dataset = dataset
        self.path = self.dir / f"{dataset}.json"
        self.lock_path = self.dir / f"{dataset}.lock"

    def load(self) -> Manifest | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return Manifest.from_json(text)
        except (ValueError, KeyError) as e:
            # Unreadable bookkeeping is never trusted: the caller falls back to a full rebuild.
            log.warning("ignoring unreadable manifest %s: %s", self.path, e)
            return None

    def save(self, m: Manifest) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        m.updated_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        tmp = self.dir / f".{self.dataset}.json.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(m.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

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


def recover(store: ManifestStore, m: Manifest | None, lake: Lake, logger=log) -> Manifest | None:
    """Resolve a ``pending`` entry left by a run that died around its publish."""
    if m is None or not m.pending:
        return m
    p = m.pending
    live = table_files(lake, "bronze", store.dataset)
    if live == p.get("pre_files"):
        logger.warning(
            f"bronze/{store.dataset}: run {p.get('run_id')} stopped before publishing; "
            "its files stay un-ingested"
        )
    else:
        logger.warning(
            f"bronze/{store.dataset}: run {p.get('run_id')} published but did not commit its "
            "manifest; committing it now (its files are not ingested again)"
        )
        m.entries = p["entries"]
        m.table_files = live
        m.last_run_id = p.get("run_id")
        m.revision += 1
    m.pending = None
    store.save(m)
    return m


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

    def metadata(self) -> dict:
        meta = {
            "ingest_mode": self.mode,
            "files_read": self.files_read,
            "files_replaced": self.files_replaced,
            "manifest_objects": self.manifest_entries,
            "manifest_digest": self.manifest_digest[:16],
        }
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
            if live is None and (m is None or not m.entries):
                mode = "full"  # first ingestion: nothing to keep, nothing ingested
            elif m is None or m.table_files != live:
                logger.warning(
                    f"bronze/{ds.name}: the manifest does not describe the live table "
                    f"({'no manifest' if m is None else 'table changed outside ingestion'}); "
                    f"running a full rebuild instead of mode={cfg.mode}"
                )
                mode = "full"
        listed = store.dataset_files(ds)
        entries_before = {} if (m is None or mode == "full") else dict(m.entries)
        drop_uris: list[str] = []
        if mode == "full":
            to_read = listed
        elif mode == "incremental":
            to_read = [f for f in listed if entries_before.get(f.key, {}).get("etag") != f.etag]
            drop_uris = [f.uri for f in to_read if f.key in entries_before]
            if not to_read:
                logger.info(f"bronze/{ds.name}: no object version that is not ingested yet; nothing to do")
                return None
        else:  # days
            to_read = [f for f in listed if f.dt in days]
            entries_before = {k: v for k, v in entries_before.items() if v.get("dt") not in days}
        entries_after = dict(entries_before)
        for f in to_read:
            entries_after[f.key] = _entry(f, run_id)

        store.prefetch(to_read)  # S3: stage the objects in parallel
        read = read_bronze(session, ds, store, run_id, files=to_read)
        # a rejected file (unreadable content) is processed, once: the manifest records it with
        # its error, so it is not read again until a new version (ETag) of it lands
        by_uri = {f.uri: f for f in to_read}
        for uri, error in read.rejected.items():
            entries_after[by_uri[uri].key].update(status="rejected", uri=uri, error=error)
        columns = [f.name for f in bronze_schema(ds).fields]
        df = read.df.select(*columns)
        keep_previous = mode != "full" and live is not None
        if keep_previous:
            prev = _keep_previous(lake.read(session, "bronze", ds.name), ds, drop_uris, days)
            df = prev.select(*columns).unionByName(df)

        m = m or Manifest(dataset=ds.name)
        m.pending = {"run_id": run_id, "mode": mode, "pre_files": live, "entries": entries_after}
        manifests.save(m)  # write-ahead
        stats = lake.publish(df, "bronze", ds.name)
        m.entries = entries_after
        m.table_files = table_files(lake, "bronze", ds.name)
        m.pending = None
        m.revision += 1
        m.last_run_id = run_id
        manifests.save(m)  # commit

        store.release(to_read)  # S3: drop the staged copies
        return IngestOutcome(
            mode=mode,
            requested_mode=cfg.mode,
            read=read,
            stats=stats,
            files_read=len(to_read),
            files_replaced=len(drop_uris),
            rows_kept_from_previous=keep_previous,
            manifest_entries=len(entries_after),
            manifest_digest=version_digest((k, v["etag"]) for k, v in entries_after.items()),
            days=days,
        )
