"""Arrivals: ``landing_arrival_sensor`` (landing zone -> bronze runs) and the automation sensor
that carries new bronze data on to silver, quarantine and gold.

Each tick of ``landing_arrival_sensor``:

1. lists every dataset's landed files through the platform's ``LandingStore`` (S3: paginated
   ListObjectsV2; a local folder: a directory walk -- the same code path);
2. picks the object versions (key + ETag) it has not seen (see "Cursor");
3. reports an ``AssetObservation`` on each ``raw/<system>/<dataset>`` with new files; its data
   version is a digest of the keys and ETags of all of the dataset's landed objects;
4. requests ONE run of ``landing_ingest`` for the bronze assets of those datasets, with
   ``mode: incremental``, and ``run_key`` = digest of the new object versions: a repeated request
   for the same versions (a re-listing, a re-evaluated tick, a restarted daemon) is dropped by
   Dagster. The run itself ingests each version once (``etl_assets/ingest.py`` ingest log), so
   even a request for versions already ingested adds no row.

Any listing error (S3 unreachable, access denied) raises: the tick fails, Dagster keeps the
previous cursor and the next tick lists again -- nothing is skipped.

**Cursor.** Per dataset: ``hwm`` = the greatest LastModified seen, and ``seen`` = digests of
the object versions with LastModified >= ``hwm - lookback``. A listed version is new when its
LastModified is within that window and its digest is not in ``seen`` (or the dataset has no
cursor yet). So a file whose LastModified equals the cursor's is compared by key+ETag, never
skipped for its timestamp, and objects whose LastModified is older than the newest one seen
(S3 multipart uploads carry their start time; clocks differ) are still found within the
lookback (``ETL_SENSOR_LOOKBACK_S``, default 3600). ``seen`` is rebuilt from each listing, so the
cursor stays proportional to the arrivals of one lookback window; it is stored as zlib+base64
JSON when large.

**10,000+ objects.** Listing is paginated (1,000 keys per request; ~10 requests for 10K keys).
Datasets are listed one after the other while the tick's time budget lasts
(``ETL_SENSOR_TICK_BUDGET_S``, default 40 s, below Dagster's 60 s sensor timeout); the rest are
listed on the next tick, starting where this one stopped (``next`` in the cursor), so every
dataset is covered by a planned sequence of ticks however large the landing zone grows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass, field

from dagster import (
    AssetObservation,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    in_process_executor,
    sensor,
)

from etl_assets.assets.factory import raw_key, table_key
from etl_assets.ingest import version_digest
from etl_assets.registry import DATASETS, Dataset
from etl_assets.resources import PlatformResource
from etl_assets.storage import LandedFile, LandingStore

log = logging.getLogger(__name__)

CURSOR_VERSION = 1
DATA_VERSION_TAG = "dagster/data_version"  # dagster._core.definitions.data_version.DATA_VERSION_TAG
SENSOR_NAME = "landing_arrival_sensor"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _default_status() -> DefaultSensorStatus:
    raw = (os.environ.get("ETL_SENSOR_DEFAULT_STATUS") or "running").strip().lower()
    if raw not in ("running", "stopped"):
        raise ValueError(f"ETL_SENSOR_DEFAULT_STATUS={raw!r}: expected running or stopped")
    return DefaultSensorStatus.RUNNING if raw == "running" else DefaultSensorStatus.STOPPED


def bronze_op_name(ds: Dataset) -> str:
    return table_key("bronze", ds.name).to_python_identifier()


def incremental_run_config(datasets: list[Dataset], mode: str = "incremental") -> dict:
    return {"ops": {bronze_op_name(ds): {"config": {"mode": mode}} for ds in datasets}}


def version_hash(f: LandedFile) -> str:
    return hashlib.blake2b(f"{f.key}\t{f.etag}".encode(), digest_size=8).hexdigest()


# ---------------------------------------------------------------------------------------------
# Cursor
# ---------------------------------------------------------------------------------------------
@dataclass
class DatasetCursor:
    hwm: float
    seen: set[str] = field(default_factory=set)
    fingerprint: str | None = None


@dataclass
class ArrivalCursor:
    datasets: dict[str, DatasetCursor] = field(default_factory=dict)
    next: int = 0

    def encode(self) -> str:
        raw = json.dumps(
            {
                "v": CURSOR_VERSION,
                "next": self.next,
                "ds": {
                    name: {"hwm": c.hwm, "fp": c.fingerprint, "seen": sorted(c.seen)}
                    for name, c in sorted(self.datasets.items())
                },
            },
            separators=(",", ":"),
        )
        if len(raw) <= 4096:
            return raw
        return "z1:" + base64.b64encode(zlib.compress(raw.encode(), 9)).decode()

    @classmethod
    def decode(cls, text: str | None) -> "ArrivalCursor":
        if not text:
            return cls()
        if text.startswith("z1:"):
            text = zlib.decompress(base64.b64decode(text[3:])).decode()
        raw = json.loads(text)
        if raw.get("v") != CURSOR_VERSION:
            raise ValueError(f"unknown cursor version {raw.get('v')!r}")
        return cls(
            datasets={
                name: DatasetCursor(hwm=float(c["hwm"]), seen=set(c.get("seen") or ()), fingerprint=c.get("fp"))
                for name, c in (raw.get("ds") or {}).items()
            },
            next=int(raw.get("next") or 0),
        )


@dataclass
class DatasetScan:
    ds: Dataset
    files: list[LandedFile]
    new: list[LandedFile]
    fingerprint: str
    seconds: float


@dataclass
class Tick:
    scans: list[DatasetScan]
    cursor: ArrivalCursor
    listed_objects: int
    seconds: float
    complete: bool  # every dataset was listed in this tick

    @property
    def new_files(self) -> list[LandedFile]:
        return [f for s in self.scans for f in s.new]


def scan_landing(
    store: LandingStore,
    cursor: ArrivalCursor,
    datasets: tuple[Dataset, ...] = DATASETS,
    budget_s: float | None = None,
    lookback_s: float | None = None,
) -> Tick:
    """List datasets (round robin from ``cursor.next``) while the budget lasts; find new versions.

    Raises whatever the listing raises; the input cursor is never modified."""
    budget_s = _env_float("ETL_SENSOR_TICK_BUDGET_S", 40.0) if budget_s is None else budget_s
    lookback_s = _env_float("ETL_SENSOR_LOOKBACK_S", 3600.0) if lookback_s is None else lookback_s
    started = time.monotonic()
    out = ArrivalCursor(datasets=dict(cursor.datasets), next=cursor.next)
    scans: list[DatasetScan] = []
    n = len(datasets)
    start = cursor.next % n if n else 0
    listed = 0
    for i in range(n):
        if i > 0 and time.monotonic() - started >= budget_s:
            break
        ds = datasets[(start + i) % n]
        t0 = time.monotonic()
        files = store.dataset_files(ds)
        listed += len(files)
        prev = cursor.datasets.get(ds.name)
        if prev is None:
            new = list(files)
        else:
            window = prev.hwm - lookback_s
            # >=: an object at exactly the window's edge (lookback 0: the cursor's own
            # LastModified) is compared by key+ETag, never skipped for its timestamp
            new = [f for f in files if f.last_modified >= window and version_hash(f) not in prev.seen]
        hwm = max([f.last_modified for f in files] + ([prev.hwm] if prev else []), default=0.0)
        window = hwm - lookback_s
        fingerprint = version_digest(files)
        out.datasets[ds.name] = DatasetCursor(
            hwm=hwm,
            seen={version_hash(f) for f in files if f.last_modified >= window},
            fingerprint=fingerprint,
        )
        scans.append(DatasetScan(ds, files, new, fingerprint, time.monotonic() - t0))
    complete = len(scans) == n
    out.next = 0 if complete else (start + len(scans)) % n
    return Tick(scans, out, listed, time.monotonic() - started, complete)


def arrivals_result(tick: Tick, source: str) -> SensorResult:
    """Observations + one incremental bronze run request for the datasets with new versions."""
    changed = [s for s in tick.scans if s.new]
    events = []
    for s in changed:
        dts = sorted({f.dt for f in s.new if f.dt})
        events.append(
            AssetObservation(
                asset_key=raw_key(s.ds),
                description=f"{len(s.new)} new object version(s) under {source}/{s.ds.landing_prefix}/",
                metadata={
                    "new_objects": len(s.new),
                    "new_bytes": sum(f.size for f in s.new),
                    "total_objects": len(s.files),
                    "total_bytes": sum(f.size for f in s.files),
                    "new_dt_folders": ", ".join(dts),
                    "new_keys_sample": MetadataValue.json([f.key for f in s.new[:20]]),
                    "listing_seconds": round(s.seconds, 3),
                },
                tags={DATA_VERSION_TAG: s.fingerprint[:32]},
            )
        )
    if not changed:
        listed = ", ".join(s.ds.name for s in tick.scans)
        return SensorResult(
            skip_reason=SkipReason(
                f"no new object versions in {tick.listed_objects} listed objects ({listed}); "
                f"{tick.seconds:.1f}s"
            ),
            cursor=tick.cursor.encode(),
        )
    new = tick.new_files
    datasets = [s.ds for s in changed]
    request = RunRequest(
        run_key=f"arrivals-{version_digest(new)[:40]}",
        asset_selection=[table_key("bronze", ds.name) for ds in datasets],
        run_config=incremental_run_config(datasets),
        tags={
            "etl/trigger": SENSOR_NAME,
            "etl/new_objects": str(len(new)),
            "etl/datasets": ",".join(ds.name for ds in datasets),
        },
    )
    return SensorResult(run_requests=[request], asset_events=events, cursor=tick.cursor.encode())


def evaluate_arrivals(store: LandingStore, cursor_text: str | None, logger=log, **kw) -> SensorResult:
    try:
        cursor = ArrivalCursor.decode(cursor_text)
    except (ValueError, KeyError, TypeError, zlib.error) as e:
        # Starting over is safe: run keys and the ingest log drop what was done already.
        logger.warning(f"unreadable cursor ({e}); listing everything as new")
        cursor = ArrivalCursor()
    tick = scan_landing(store, cursor, **kw)
    logger.info(
        f"listed {tick.listed_objects} objects in {len(tick.scans)} dataset(s) in {tick.seconds:.2f}s; "
        f"{len(tick.new_files)} new" + ("" if tick.complete else f"; continuing at dataset #{tick.cursor.next}")
    )
    return arrivals_result(tick, store.root_uri)


# ---------------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------------
landing_ingest_job = define_asset_job(
    "landing_ingest",
    selection=AssetSelection.groups("bronze"),
    executor_def=in_process_executor,
    description="Incremental bronze ingestion requested by landing_arrival_sensor "
    "(run config: ops.bronze__<dataset>.config.mode / days).",
)


@sensor(
    name=SENSOR_NAME,
    job=landing_ingest_job,
    minimum_interval_seconds=int(_env_float("ETL_SENSOR_INTERVAL_S", 30)),
    default_status=_default_status(),
    description="Lists the landing zone (local folder or S3) for new object versions (key+ETag), "
    "observes the raw assets and requests an incremental run of the affected bronze assets.",
)
def landing_arrival_sensor(context: SensorEvaluationContext, platform: PlatformResource) -> SensorResult:
    return evaluate_arrivals(platform.landing, context.cursor, logger=context.log)


# Silver, quarantine and gold carry AutomationCondition.eager(): this sensor evaluates them and
# launches the runs, so new bronze data reaches gold without anyone launching anything.
lakehouse_automation_sensor = AutomationConditionSensorDefinition(
    "lakehouse_automation_sensor",
    target=AssetSelection.groups("silver", "gold"),
    default_status=_default_status(),
    minimum_interval_seconds=int(_env_float("ETL_AUTOMATION_INTERVAL_S", 30)),
    description="Propagates new bronze materializations to silver, quarantine and gold (eager).",
)
