"""The write audit: ``gold/audit_log`` gets one row per published table version.

Every publish of a bronze, silver, quarantine or gold table (``Lake.publish``, called from
``etl_assets/ingest.py`` via the bronze asset, ``assets/factory.py`` and ``assets/gold.py``) is
followed by ``record(...)``, which appends one row:

| column | meaning |
| --- | --- |
| ``run_id`` | the Dagster run that published the version |
| ``job`` | that run's job |
| ``asset`` | the table's asset key, ``layer/table`` |
| ``rows`` | rows of the published version |
| ``launched_by`` | who started the run (see ``launched_by``) |
| ``code_version`` | git commit of the code (see ``code_version``) |
| ``started_at`` | UTC: when the step computing the version started |
| ``finished_at`` | UTC: when the version was published (after the atomic swap) |

**Append-only, atomic and concurrency-safe without a lock.** Each row is its own small Parquet
file written by pyarrow on the driver (no Spark job): first to a hidden temporary file
``.tmp-<uuid>.parquet`` inside ``<lake>/gold/audit_log/``, flushed and fsynced, then renamed to
``<finished_at>-<run>-<layer>-<table>-<uuid>.parquet``. ``rename`` within one folder is atomic, so
a reader (pyarrow or Spark, both skip names starting with ``.`` and ``_``) sees a whole file or
none, and two runs never write the same name. Nothing ever rewrites or deletes an audit file.

Who launched a run (``launched_by``), first match wins:

1. ``dagster/user`` tag: the authenticated user (set by Dagster+ / an authenticating front end);
2. ``launched_by`` tag: self-declared, e.g. ``dagster job execute ... --tags '{"launched_by": "alice"}'``;
3. ``dagster/sensor_name`` -> ``sensor:<name>``; ``dagster/schedule_name`` -> ``schedule:<name>``;
   ``dagster/backfill`` -> ``backfill:<id>``; runs of the automation (declarative) sensor ->
   ``automation``;
4. else ``manual`` (launchpad or CLI without a tag).

The code version is ``ETL_CODE_VERSION`` when set (CI/CD bakes the commit into the image), else
``git rev-parse HEAD`` of the repository at definitions load, else ``unknown``.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import subprocess
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parents[1]
LAYER, TABLE = "gold", "audit_log"
ASSET = f"{LAYER}/{TABLE}"

SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job", pa.string(), nullable=True),
        pa.field("asset", pa.string(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("launched_by", pa.string(), nullable=False),
        pa.field("code_version", pa.string(), nullable=False),
        pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@functools.lru_cache(maxsize=1)
def _git_head() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if len(sha) >= 7 else None


def code_version() -> str:
    """``ETL_CODE_VERSION``, else the repository's ``git rev-parse HEAD``, else ``unknown``."""
    return os.environ.get("ETL_CODE_VERSION", "").strip() or _git_head() or "unknown"


def launched_by(tags: dict[str, str] | None) -> str:
    """Who started a run, from its tags (see the module docstring for the order)."""
    tags = tags or {}
    for tag in ("dagster/user", "launched_by"):
        if tags.get(tag, "").strip():
            return tags[tag].strip()
    for tag, prefix in (("dagster/sensor_name", "sensor"), ("dagster/schedule_name", "schedule"),
                        ("dagster/backfill", "backfill")):
        if tags.get(tag, "").strip():
            return f"{prefix}:{tags[tag].strip()}"
    if tags.get("dagster/from_automation_condition") or tags.get("dagster/automation_condition_evaluation_id"):
        return "automation"
    return "manual"


def audit_dir(lake_root: str | Path) -> Path:
    return Path(lake_root) / LAYER / TABLE


def append(
    lake_root: str | Path,
    *,
    run_id: str,
    job: str | None,
    asset: str,
    rows: int,
    launched_by: str,
    code_version: str,
    started_at: dt.datetime,
    finished_at: dt.datetime,
) -> Path:
    """Append one audit row as its own Parquet file (temp file + fsync + rename); returns it."""
    if started_at > finished_at:
        raise ValueError(f"audit row for {asset}: started_at {started_at} is after finished_at {finished_at}")
    folder = audit_dir(lake_root)
    folder.mkdir(parents=True, exist_ok=True)
    row = pa.Table.from_pylist(
        [
            {
                "run_id": run_id,
                "job": job,
                "asset": asset,
                "rows": int(rows),
                "launched_by": launched_by,
                "code_version": code_version,
                "started_at": started_at.astimezone(dt.timezone.utc),
                "finished_at": finished_at.astimezone(dt.timezone.utc),
            }
        ],
        schema=SCHEMA,
    )
    unique = uuid.uuid4().hex
    tmp = folder / f".tmp-{unique}.parquet"
    stamp = finished_at.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    final = folder / f"{stamp}-{run_id[:8]}-{asset.replace('/', '-')}-{unique[:12]}.parquet"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(row, f, compression="snappy")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)  # atomic within the folder; the name is unique
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the new directory entry durable too
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - e.g. a file system without directory fsync
        pass
    return final


def record(context, lake, layer: str, table: str, rows: int, started_at: dt.datetime) -> dict:
    """Append the audit row of the version of ``layer/table`` just published by this step, and
    record an observation of ``gold/audit_log`` in the event log (visible in the UI)."""
    from dagster import AssetKey, AssetObservation, MetadataValue

    run = context.run
    row = dict(
        run_id=context.run_id,
        job=getattr(run, "job_name", None),
        asset=f"{layer}/{table}",
        rows=int(rows),
        launched_by=launched_by(dict(run.tags or {})),
        code_version=code_version(),
        started_at=started_at,
        finished_at=utcnow(),
    )
    path = append(lake.root, **row)
    context.log_event(
        AssetObservation(
            asset_key=AssetKey([LAYER, TABLE]),
            metadata={
                "asset": row["asset"],
                "rows": row["rows"],
                "launched_by": row["launched_by"],
                "code_version": row["code_version"],
                "audit_file": MetadataValue.path(str(path)),
            },
        )
    )
    return row


def read(lake_root: str | Path) -> pa.Table:
    """Every audit row (pyarrow; hidden temp files are skipped); empty when there is none."""
    folder = audit_dir(lake_root)
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))) if folder.is_dir() else []
    if not files:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in files])


def audit_log_spec():
    """``gold/audit_log`` in the asset graph: written by every publishing step (not materialized
    by a step of its own); each appended row also shows as an observation of this asset."""
    import inspect
    import warnings

    from dagster import AssetKey, AssetSpec, BetaWarning, CodeReferencesMetadataValue, LocalFileCodeReference

    from etl_assets.assets.gold import OWNER
    from etl_assets.schemas import column_schema

    with warnings.catch_warnings():  # code references are a beta API
        warnings.simplefilter("ignore", BetaWarning)
        refs = CodeReferencesMetadataValue(
            code_references=[
                LocalFileCodeReference(
                    file_path=str(Path(__file__).resolve()),
                    line_number=inspect.getsourcelines(record)[1],
                    label="asset definition",
                )
            ]
        )
    return AssetSpec(
        key=AssetKey([LAYER, TABLE]),
        group_name="gold",
        kinds={"parquet", "pyarrow"},
        owners=[OWNER],
        tags={"layer": "gold", "pii": "no", "source_system": "platform"},
        description="Write audit, append-only: one row per published table version (bronze, silver, "
        "quarantine, gold) with run id, job, asset, rows, launched_by, code version (git SHA) and UTC "
        "start/finish. Each row is its own Parquet file under <lake>/gold/audit_log/, written atomically "
        "(temp file + rename) by the publishing step; see etl_assets/audit.py. Not rebuilt by a rerun.",
        metadata={
            "dagster/column_schema": column_schema(ASSET),
            "dagster/code_references": refs,
        },
    )

