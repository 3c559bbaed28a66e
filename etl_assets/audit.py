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

**Append-only, atomic and concurrency-safe without a lock.** ``gold/audit_log`` is a Delta table;
each row is appended by ``deltalake`` on the driver (no Spark job) as one Delta commit, followed by
its ``_publish`` row (``Lake.append``). Local commits are an atomic create-if-absent, so two runs
appending at once both land (the later one retries on the next version). Nothing rewrites or
deletes audit rows except the compliance jobs, which record themselves here too.

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
from pathlib import Path

import pyarrow as pa

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


def _lake(lake):
    from etl_assets.lake import Lake

    return lake if isinstance(lake, Lake) else Lake(str(lake))


def append(
    lake,
    *,
    run_id: str,
    job: str | None,
    asset: str,
    rows: int,
    launched_by: str,
    code_version: str,
    started_at: dt.datetime,
    finished_at: dt.datetime,
) -> int:
    """Append one audit row to ``gold/audit_log`` of ``lake`` (a ``Lake`` or its root) in one
    Delta commit; returns the table version it created."""
    if started_at > finished_at:
        raise ValueError(f"audit row for {asset}: started_at {started_at} is after finished_at {finished_at}")
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
    return _lake(lake).append(LAYER, TABLE, row, run_id)["version"]


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
    version = append(lake, **row)
    context.log_event(
        AssetObservation(
            asset_key=AssetKey([LAYER, TABLE]),
            metadata={
                "asset": row["asset"],
                "rows": row["rows"],
                "launched_by": row["launched_by"],
                "code_version": row["code_version"],
                "audit_log_version": version,
                "audit_log": MetadataValue.path(lake.path(LAYER, TABLE)),
            },
        )
    )
    return row


def read(lake) -> pa.Table:
    """Every audit row (pyarrow, read by ``deltalake``); empty when there is none."""
    lake = _lake(lake)
    if not lake.exists(LAYER, TABLE):
        return SCHEMA.empty_table()
    return lake.arrow(LAYER, TABLE).cast(SCHEMA)


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
        kinds={"delta", "pyarrow"},
        owners=[OWNER],
        tags={"layer": "gold", "pii": "no", "source_system": "platform"},
        description="Write audit, append-only: one row per published table version (bronze, silver, "
        "quarantine, gold) with run id, job, asset, rows, launched_by, code version (git SHA) and UTC "
        "start/finish. A Delta table; each row is appended in its own commit by the publishing step; "
        "see etl_assets/audit.py. Not rebuilt by a rerun.",
        metadata={
            "dagster/column_schema": column_schema(ASSET),
            "dagster/code_references": refs,
        },
    )

