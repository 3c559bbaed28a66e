"""Exactly-once bronze ingestion: run modes and the ingest log.

Run modes (``BronzeConfig``, run config of every ``bronze/<dataset>`` asset)::

    ops:
      bronze__orders:
        config:
          mode: incremental          # full (default) | incremental | days
          days: []                   # mode=days: the dt folders to re-ingest, e.g. ["2026-11-02"]

Every run is ONE Delta commit to ``bronze/<dataset>`` (``Lake.commit``):

- ``full`` (the default, what ``etl_all`` does): an overwrite with every landed file, exactly as a
  fresh run.
- ``incremental`` (what ``landing_arrival_sensor`` requests): only object versions (key + ETag)
  not in the ingest log are read, and their rows replace the rows of the same ``_source_file``
  (Delta ``replaceWhere``). So an overwritten object replaces its previous version's rows, and a
  file read twice (a retry after a kill) replaces its rows instead of doubling them: each object
  version is in bronze exactly once. Nothing new: no commit, no materialization, nothing
  downstream runs.
- ``days``: the rows of the given ``dt`` folders are replaced (``replaceWhere _dt IN (...)``) by a
  fresh read of those folders. The result equals a fresh run over the current landing zone.

The cost of an incremental run is the new files, not the table: Delta rewrites only the data
files whose statistics may hold a replaced ``_source_file``.

**The ingest log** (``Lake.ledger``, a small Delta table per dataset, written after the bronze
commit) holds one row per object version bronze holds or rejected: key, URI, ETag, size, ``dt``,
run, status and error. Each log commit records the bronze version it describes. When that is not
bronze's current version -- a run killed between the two commits, or bronze changed by other
means (a restore) -- incremental and days runs fall back to a full rebuild, which is always
correct. Commits that change no data (OPTIMIZE, VACUUM) do not count. A rejected file (unreadable content) is logged with its error and not read again until a
new version (ETag) of it lands.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa
from dagster import Config
from pydantic import Field
from pyspark.sql import SparkSession

from etl_assets.lake import Lake, Write
from etl_assets.registry import Dataset
from etl_assets.storage import LandedFile, LandingStore
from etl_assets.transforms.bronze import BronzeRead, bronze_schema, file_day, read_bronze

log = logging.getLogger(__name__)

LINEAGE_COLUMNS = ("_source_file", "_dt", "_ingested_at", "_run_id")
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
LOG_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("uri", pa.string()),
        ("etag", pa.string()),
        ("size", pa.int64()),
        ("dt", pa.string()),
        ("run_id", pa.string()),
        ("status", pa.string()),  # ingested | rejected
        ("error", pa.string()),
    ]
)


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




def _sql_list(values, spark: bool = True) -> str:
    """String literals for an ``IN (...)`` list: Spark SQL escapes with backslashes (every Spark
    version), ``deltalake``'s predicates (DataFusion) double the quote and keep backslashes."""
    if spark:
        return ", ".join("'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


@dataclass
class IngestLog:
    """The object versions bronze holds (or rejected), and the bronze version they describe."""

    entries: dict[str, dict]
    bronze_version: int | None

    @classmethod
    def load(cls, lake: Lake, dataset: str) -> "IngestLog":
        rows, meta = lake.ledger(dataset)
        version = meta.get("bronze_version")
        return cls({r["key"]: r for r in rows.to_pylist()}, int(version) if version is not None else None)

    def versions(self) -> set[tuple[str, str]]:
        return {(k, e["etag"]) for k, e in self.entries.items()}


def _log_rows(files: list[LandedFile], read: BronzeRead, run_id: str) -> pa.Table:
    rows = []
    for f in files:
        error = read.rejected.get(f.uri)
        rows.append({"key": f.key, "uri": f.uri, "etag": f.etag, "size": int(f.size), "dt": f.dt,
                     "run_id": run_id, "status": "rejected" if error else "ingested", "error": error})
    return pa.Table.from_pylist(rows, schema=LOG_SCHEMA)


@dataclass
class IngestOutcome:
    mode: str  # the mode actually run (a fallback to full shows here)
    requested_mode: str
    read: BronzeRead
    stats: dict
    files_read: int
    files_replaced: int
    log_entries: int
    log_digest: str
    days: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        meta = {
            "ingest_mode": self.mode,
            "files_read": self.files_read,
            "files_replaced": self.files_replaced,
            "ingested_objects": self.log_entries,
            "ingested_digest": self.log_digest[:16],
            "rows_written": self.stats.get("rows_written", 0),
        }
        if self.mode != self.requested_mode:
            meta["ingest_mode_requested"] = self.requested_mode
        if self.days:
            meta["days"] = ", ".join(self.days)
        return meta


def unreadable_files(lake: Lake, store: LandingStore, ds: Dataset) -> dict[str, str]:
    """``{uri: why}``: the dataset's landed files that bronze does not hold because they cannot be
    read (rejected, as recorded in the ingest log) or were refused at listing (unsafe keys, links)."""
    out = {}
    for key, e in sorted(IngestLog.load(lake, ds.name).entries.items()):
        if e.get("status") == "rejected":
            out[e.get("uri") or key] = e.get("error") or "rejected"
    out.update(store.refused(ds.landing_prefix + "/"))
    return out


MAINTENANCE_OPERATIONS = {"OPTIMIZE", "VACUUM START", "VACUUM END"}


def _only_maintenance_since(lake: Lake, ds: Dataset, logged: int | None) -> bool:
    """Whether every bronze commit after version ``logged`` only compacted or vacuumed files
    (no data change): then the ingest log still describes the table."""
    if logged is None:
        return False
    table = lake.delta("bronze", ds.name)
    newer = table.version() - logged
    if newer <= 0:
        return False
    return all(e.get("operation") in MAINTENANCE_OPERATIONS for e in table.history(newer))


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
    with lake.step_lock(writes=[("bronze", ds.name)], logger=logger):
        ingest_log = IngestLog.load(lake, ds.name)
        live = lake.version("bronze", ds.name)
        mode = cfg.mode
        if mode != "full":
            if live is None:
                mode = "full"  # first ingestion: nothing to keep
            elif ingest_log.bronze_version != live and not _only_maintenance_since(lake, ds, ingest_log.bronze_version):
                logger.warning(
                    f"bronze/{ds.name}: the ingest log describes bronze version {ingest_log.bronze_version}, "
                    f"not the live version {live} (a run killed before logging, or a restore); "
                    f"running a full rebuild instead of mode={cfg.mode}"
                )
                mode = "full"
        listed = store.dataset_files(ds)
        known = {} if mode == "full" else ingest_log.entries
        replace_where, log_predicate, replaced = None, None, 0
        if mode == "full":
            to_read = listed
        elif mode == "incremental":
            to_read = [f for f in listed if known.get(f.key, {}).get("etag") != f.etag]
            if not to_read:
                logger.info(f"bronze/{ds.name}: no object version that is not ingested yet; nothing to do")
                return None
            replaced = sum(1 for f in to_read if f.key in known)
            # the days first: Delta skips other days' files by their _dt statistics (those of a
            # long _source_file are truncated to a prefix, which cannot tell files apart)
            days_read = {file_day(f.uri) for f in to_read}
            on_days = " OR ".join(([f"_dt IN ({_sql_list(sorted(days_read - {None}))})"] if days_read - {None} else [])
                                  + (["_dt IS NULL"] if None in days_read else []))
            replace_where = f"({on_days}) AND _source_file IN ({_sql_list(f.uri for f in to_read)})"
            log_predicate = f"key IN ({_sql_list((f.key for f in to_read), spark=False)})"
        else:  # days
            to_read = [f for f in listed if f.dt in days]
            replace_where = f"_dt IN ({_sql_list(days)})"
            log_predicate = f"dt IN ({_sql_list(days, spark=False)})"

        store.prefetch(to_read)  # S3: stage the objects in parallel
        read = read_bronze(session, ds, store, run_id, files=to_read)
        schema = bronze_schema(ds)
        df = read.df.select(*[f.name for f in schema.fields]) if read.df is not None else session.createDataFrame([], schema)
        write = Write(df, "bronze", ds.name, mode="overwrite", replace_where=replace_where, pii=frozenset(ds.pii_columns))
        stats = lake.commit([write], run_id)[0]
        # after the commit: a run killed here leaves a log that names the previous bronze version
        lake.write_ledger(ds.name, _log_rows(to_read, read, run_id), predicate=log_predicate,
                          metadata={"bronze_version": str(stats["version"]), "run_id": run_id})
        store.release(to_read)  # S3: drop the staged copies
        after = IngestLog.load(lake, ds.name)
        return IngestOutcome(
            mode=mode,
            requested_mode=cfg.mode,
            read=read,
            stats=stats,
            files_read=len(to_read),
            files_replaced=replaced,
            log_entries=len(after.entries),
            log_digest=version_digest(after.versions()),
            days=days,
        )
