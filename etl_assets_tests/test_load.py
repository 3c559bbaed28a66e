"""Load: days of landed files delivered one day at a time through the sensor path.

Each day's files (every ``dt=<day>`` folder of the nine datasets) are copied into a landing
folder with that day's arrival time; ``landing_arrival_sensor`` is evaluated with the previous
cursor (``build_sensor_context``, the real sensor) and its run request is executed as the
``landing_ingest`` job in process (incremental bronze for every dataset with new files).

Recorded per day: files, records, sensor tick seconds, ingest seconds, seconds per file and per
1,000 records, cursor bytes, manifest bytes (on disk, written that day, largest single write),
bronze rows and bytes written, files kept by hard link.

Asserted (nothing timed): every delivered record is in bronze exactly once; each run writes the
new rows only -- the rows of the Parquet files that appear in the lake in that run equal the
rows the run added, and every file of the previous version is still there, unchanged (same
inode); the manifest never writes more than a bounded amount per run and the cursor stays
bounded (the largest of the last days <= 1.5 x the largest of the first days). The headline
figure, cost per file over the last days vs the first days, is reported, not asserted.

- ``test_load_small``: 3 days at scale 0.02 of one dataset per format (normal suite), plus an overwritten object (only its
  day is rewritten; bronze equals a fresh full ingestion) and compaction of a day with too many
  files.
- ``test_load_30_days``: 30 days of all nine datasets, marked ``slow``: at scale 0.02 in
  ``make test-slow``; ``make load-report`` runs it at scale 1 (about 1.45M records, 30 minutes)
  and writes ``docs/load.md``. ``ETL_LOAD_DATA_DIR`` keeps the generated landing zone between
  runs (it is deterministic), ``ETL_LOAD_DAYS``/``ETL_LOAD_SCALE`` change the size,
  ``ETL_LOAD_REPORT`` names the report file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import Definitions, SensorResult, build_sensor_context, in_process_executor, instance_for_test

from etl_assets.definitions import build_definitions
from etl_assets.ingest import BronzeConfig, ManifestStore, ingest_bronze, table_files
from etl_assets.lake import Lake
from etl_assets.registry import DATASETS, dataset
from etl_assets.resources import SparkResource
from etl_assets.sample_data import generate
from etl_assets.sensors import landing_arrival_sensor
from etl_assets.settings import Settings
from etl_assets_tests.conftest import TEST_PII

DAY_S = 86_400
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------------------------
@dataclass
class DayFigures:
    day: str
    files: int
    records: int
    tick_s: float
    ingest_s: float
    cursor_bytes: int
    manifest_disk_bytes: int
    manifest_written_bytes: int
    manifest_largest_write: int
    rows_written: int
    bytes_written: int
    files_linked: int
    table_files: int

    @property
    def s_per_file(self) -> float:
        return self.ingest_s / max(self.files, 1)

    @property
    def s_per_krec(self) -> float:
        return self.ingest_s / max(self.records, 1) * 1000


def landing_days(src: Path, datasets=DATASETS) -> dict[str, list[str]]:
    """{dt: [keys]} of the generated landing zone (the given datasets' files)."""
    prefixes = tuple(ds.landing_prefix + "/" for ds in datasets)
    out: dict[str, list[str]] = {}
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.relative_to(src).as_posix().startswith(prefixes):
            key = p.relative_to(src).as_posix()
            day = next((part[3:] for part in key.split("/") if part.startswith("dt=")), None)
            if day:
                out.setdefault(day, []).append(key)
    return dict(sorted(out.items()))


def sample_landing(out: Path, days: int, scale: float, seed: int) -> tuple[Path, dict]:
    """The generated landing zone and its record totals; reused from ``out`` when it holds the
    same parameters (the generator is deterministic)."""
    params = {"days": days, "scale": scale, "seed": seed}
    meta = out / "load-params.json"
    landing = out / "landing"
    if meta.exists() and json.loads(meta.read_text()).get("params") == params and landing.is_dir():
        return landing, json.loads(meta.read_text())["totals"]
    shutil.rmtree(landing, ignore_errors=True)
    t0 = time.monotonic()
    totals = generate(landing, days=days, seed=seed, scale=scale)
    print(f"\n[load] generated {sum(totals.values()):,} records in {time.monotonic() - t0:.0f}s")
    out.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"params": params, "totals": totals}))
    return landing, totals


def bronze_inodes(lake: Lake, datasets=DATASETS) -> dict[int, Path]:
    out = {}
    for ds in datasets:
        root = Path(lake.path("bronze", ds.name))
        for name in table_files(lake, "bronze", ds.name) or []:
            out[(root / name).stat().st_ino] = root / name
    return out


def rows_of(paths) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def manifest_disk_bytes(lake: Lake) -> int:
    return sum(p.stat().st_size for p in (lake.root / "_manifests").rglob("*.json"))


class Load:
    def __init__(self, src: Path, work: Path, instance, datasets=DATASETS):
        self.src, self.instance, self.datasets = src, instance, tuple(datasets)
        self.landing, self.lake_dir = work / "landing", work / "lake"
        self.landing.mkdir(parents=True)
        prod = build_definitions(
            Settings(env="local", landing_uri=str(self.landing), lake_uri=str(self.lake_dir),
                     pii_salt=TEST_PII.salt, pii_key=TEST_PII.key)
        )
        self.platform = prod.resources["platform"]
        self.defs = Definitions(
            assets=prod.assets, jobs=prod.jobs, sensors=prod.sensors, executor=in_process_executor,
            resources={
                "platform": self.platform,
                "spark": SparkResource(master="local[2]", shuffle_partitions=2, driver_memory="2g"),
            },
        )
        self.job = self.defs.resolve_job_def("landing_ingest")
        self.lake = Lake(str(self.lake_dir))
        self.cursor: str | None = None
        # arrival times one day apart (in the future, so the copy's ctime does not win)
        self.t0 = time.time() + 3600

    def deliver(self, keys: list[str], arrival: float, src: Path | None = None) -> None:
        for k in keys:
            dest = self.landing / k
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile((src or self.src) / k, dest)
            os.utime(dest, (arrival, arrival))

    def tick(self) -> SensorResult:
        ctx = build_sensor_context(instance=self.instance, cursor=self.cursor, resources={"platform": self.platform})
        return landing_arrival_sensor(ctx)

    def run(self, req):
        return self.job.execute_in_process(
            run_config=req.run_config, instance=self.instance, asset_selection=req.asset_selection, tags=req.tags
        )

    def bronze_rows(self) -> int:
        return rows_of(self.lake_dir.glob("bronze/*/*.parquet"))

    def day(self, i: int, day: str, keys: list[str]) -> DayFigures:
        self.deliver(keys, self.t0 + i * DAY_S)
        before_inodes = bronze_inodes(self.lake, self.datasets)
        before_rows = self.bronze_rows()

        t = time.monotonic()
        result = self.tick()
        tick_s = time.monotonic() - t
        (req,) = result.run_requests
        assert int(req.tags["etl/new_objects"]) == len(keys), (day, req.tags)

        t = time.monotonic()
        run = self.run(req)
        ingest_s = time.monotonic() - t
        assert run.success
        self.cursor = result.cursor

        meta = [e.materialization.metadata for e in run.get_asset_materialization_events()]
        assert len(meta) == len(req.asset_selection)
        assert all(m["ingest_mode"].value == "incremental" for m in meta) or i == 0
        after_inodes = bronze_inodes(self.lake, self.datasets)
        new_files = [p for ino, p in after_inodes.items() if ino not in before_inodes]
        added = self.bronze_rows() - before_rows
        # only new rows were written: the files new in the lake hold exactly the added rows, and
        # every file of the previous version is still there (same inode: linked, not rewritten)
        assert rows_of(new_files) == added == sum(m["rows_written"].value for m in meta), day
        assert set(before_inodes) <= set(after_inodes), day
        if i > 0:
            assert sum(m["files_linked"].value for m in meta) == len(before_inodes), day
            assert sum(m["rows_reread"].value for m in meta) == 0, day
        return DayFigures(
            day=day,
            files=len(keys),
            records=added,
            tick_s=tick_s,
            ingest_s=ingest_s,
            cursor_bytes=len(self.cursor or ""),
            manifest_disk_bytes=manifest_disk_bytes(self.lake),
            manifest_written_bytes=sum(m["manifest_bytes_written"].value for m in meta),
            manifest_largest_write=max(m["manifest_largest_write"].value for m in meta),
            rows_written=sum(m["rows_written"].value for m in meta),
            bytes_written=sum(m["bytes_written"].value for m in meta),
            files_linked=sum(m["files_linked"].value for m in meta),
            table_files=sum(m["table_files"].value for m in meta),
        )

    def check_exactly_once(self, totals: dict, delivered: list[str]) -> None:
        counts = {ds.name: rows_of(Path(self.lake.path("bronze", ds.name)).glob("*.parquet")) for ds in self.datasets}
        assert counts == {ds.name: totals[ds.name] for ds in self.datasets}
        entries = {}
        for ds in self.datasets:
            m = ManifestStore(self.lake, ds.name).load()
            assert m.pending is None and m.table_digest is not None
            entries.update(m.entries)
        assert sorted(entries) == sorted(delivered)


def run_days(load: Load, days: dict[str, list[str]]) -> list[DayFigures]:
    out = []
    for i, (day, keys) in enumerate(days.items()):
        f = load.day(i, day, keys)
        out.append(f)
        print(
            f"[load] {f.day}: {f.files} files, {f.records:,} records, tick {f.tick_s:.2f}s, "
            f"ingest {f.ingest_s:.1f}s ({f.s_per_file:.2f}s/file), cursor {f.cursor_bytes} B, "
            f"manifest {f.manifest_disk_bytes:,} B on disk, largest write {f.manifest_largest_write} B",
            flush=True,
        )
    return out


def window(n: int) -> int:
    return max(1, min(5, n // 3))


def check_bounded(figs: list[DayFigures]) -> dict:
    w = window(len(figs))
    first, last = figs[:w], figs[-w:]
    summary = {
        "days": len(figs),
        "window": w,
        "cursor_first": max(f.cursor_bytes for f in first),
        "cursor_last": max(f.cursor_bytes for f in last),
        "manifest_write_first": max(f.manifest_largest_write for f in first),
        "manifest_write_last": max(f.manifest_largest_write for f in last),
        "s_per_file_first": sum(f.ingest_s for f in first) / sum(f.files for f in first),
        "s_per_file_last": sum(f.ingest_s for f in last) / sum(f.files for f in last),
    }
    summary["cost_per_file_ratio"] = summary["s_per_file_last"] / summary["s_per_file_first"]
    if len(figs) >= 3 * w:  # without the first window (cold JVM, first full ingestion)
        steady = figs[w : 2 * w]
        summary["s_per_file_steady"] = sum(f.ingest_s for f in steady) / sum(f.files for f in steady)
        summary["cost_per_file_ratio_steady"] = summary["s_per_file_last"] / summary["s_per_file_steady"]
    # bounded, whatever was ingested before (sizes, not times: these cannot be noisy)
    assert summary["manifest_write_last"] <= 1.5 * summary["manifest_write_first"], summary
    assert summary["cursor_last"] <= 1.5 * summary["cursor_first"], summary
    # the manifest written per day follows the day's files, not the days before
    per_file = [f.manifest_written_bytes / f.files for f in figs]
    assert max(per_file[-w:]) <= 1.5 * max(per_file[:w]), per_file
    return summary


def table_md(figs: list[DayFigures]) -> str:
    head = (
        "| day | files | records | tick s | ingest s | s/file | s/1000 rec | cursor B | manifest B on disk "
        "| manifest B written | largest write B | rows written | MB written | files linked | bronze files |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {f.day} | {f.files} | {f.records:,} | {f.tick_s:.2f} | {f.ingest_s:.1f} | {f.s_per_file:.2f} "
        f"| {f.s_per_krec:.2f} | {f.cursor_bytes:,} | {f.manifest_disk_bytes:,} | {f.manifest_written_bytes:,} "
        f"| {f.manifest_largest_write:,} | {f.rows_written:,} | {f.bytes_written / 1e6:.2f} | {f.files_linked} "
        f"| {f.table_files} |"
        for f in figs
    ]
    return head + "\n".join(rows) + "\n"


def summary_text(s: dict, figs: list[DayFigures]) -> str:
    w = s["window"]
    total_s = sum(f.tick_s + f.ingest_s for f in figs)
    return (
        f"{s['days']} days, {sum(f.files for f in figs)} files, {sum(f.records for f in figs):,} records; "
        f"ingest {sum(f.ingest_s for f in figs):.0f}s + ticks {sum(f.tick_s for f in figs):.1f}s = {total_s:.0f}s. "
        f"Cost per file: first {w} days {s['s_per_file_first']:.2f}s, last {w} days {s['s_per_file_last']:.2f}s "
        f"(ratio {s['cost_per_file_ratio']:.2f})"
        + (
            f"; days {w + 1}-{2 * w} {s['s_per_file_steady']:.2f}s (ratio {s['cost_per_file_ratio_steady']:.2f})"
            if "s_per_file_steady" in s
            else ""
        )
        + f". Largest manifest write: first {w} days {s['manifest_write_first']:,} B, "
        f"last {w} days {s['manifest_write_last']:,} B. Cursor: {s['cursor_first']:,} B -> {s['cursor_last']:,} B."
    )


@pytest.fixture
def load_env(spark, tmp_path):  # the session Spark fixture: getOrCreate returns it
    def make(src: Path, work: Path, datasets=DATASETS):
        return Load(src, work, instance, datasets)

    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:
        yield make


# ---------------------------------------------------------------------------------------------
# the normal suite: a few days, tiny, one dataset per landed format (CSV, Parquet, JSON Lines)
# ---------------------------------------------------------------------------------------------
SMALL = tuple(dataset(n) for n in ("customers", "orders", "order_events"))


def test_load_small(load_env, tmp_path, spark, monkeypatch):
    src, totals = sample_landing(tmp_path / "gen", days=3, scale=0.02, seed=11)
    days = landing_days(src, SMALL)
    load = load_env(src, tmp_path / "work", SMALL)
    t0 = time.monotonic()
    figs = run_days(load, days)
    load.check_exactly_once(totals, [k for keys in days.values() for k in keys])
    summary = check_bounded(figs)
    (tmp_path / "load.md").write_text(table_md(figs))
    print("[load] " + summary_text(summary, figs) + f" ({time.monotonic() - t0:.0f}s)")

    # an overwritten object (same key, new content) in the first day: only that day is rewritten
    ds = dataset("customers")
    first_day = next(iter(days))
    key = next(k for k in days[first_day] if k.startswith(ds.landing_prefix + "/"))
    other = next(k for d, keys in days.items() if d != first_day for k in keys if k.startswith(ds.landing_prefix + "/"))
    shutil.copyfile(src / other, load.landing / key)  # another file's rows under the same key
    os.utime(load.landing / key, (load.t0 + 10 * DAY_S,) * 2)
    bronze = Path(load.lake.path("bronze", ds.name))
    day_files = ManifestStore(load.lake, ds.name).load().shards[first_day].files
    day_rows = rows_of(bronze / n for n in day_files)
    before = {(bronze / n).stat().st_ino for n in table_files(load.lake, "bronze", ds.name)}
    result = load.tick()
    (req,) = result.run_requests
    load.cursor = result.cursor
    run = load.run(req)
    (mat,) = run.get_asset_materialization_events()
    meta = mat.materialization.metadata
    assert meta["files_replaced"].value == 1 and meta["days_rewritten"].value == first_day
    assert meta["rows_reread"].value == day_rows  # that day only
    after = {(bronze / n).stat().st_ino for n in table_files(load.lake, "bronze", ds.name)}
    assert len(before - after) == len(day_files)  # the other days' files are kept as they were
    fresh = Lake(str(tmp_path / "fresh_lake"))
    ingest_bronze(spark, ds, load.platform.landing, fresh, "fresh", BronzeConfig(mode="full"))
    assert multiset(load.lake, ds.name) == multiset(fresh, ds.name)

    # compaction: a day that would exceed ETL_BRONZE_MAX_FILES_PER_DAY files becomes one file
    monkeypatch.setenv("ETL_BRONZE_MAX_FILES_PER_DAY", "2")
    last_day = list(days)[-1]
    extra = [k for k in days[last_day] if k.startswith(ds.landing_prefix + "/")][:1]
    for n, arrival in ((1, 11), (2, 12)):
        renamed = {k: k.replace(f"dt={last_day}/", f"dt={last_day}/extra{n}-") for k in extra}
        for k, r in renamed.items():
            (load.landing / r).write_bytes((src / k).read_bytes())
            os.utime(load.landing / r, (load.t0 + arrival * DAY_S,) * 2)
        result = load.tick()
        (req,) = result.run_requests
        load.cursor = result.cursor
        (mat,) = load.run(req).get_asset_materialization_events()
        rewritten = mat.materialization.metadata.get("days_rewritten")
        assert (rewritten and rewritten.value) == (last_day if n == 2 else None), n
    shard = ManifestStore(load.lake, ds.name).load().shards[last_day]
    assert len(shard.files) <= 2
    fresh2 = Lake(str(tmp_path / "fresh_lake2"))
    ingest_bronze(spark, ds, load.platform.landing, fresh2, "fresh", BronzeConfig(mode="full"))
    assert multiset(load.lake, ds.name) == multiset(fresh2, ds.name)


def multiset(lake: Lake, name: str) -> list[tuple]:
    t = pq.read_table(lake.path("bronze", name))
    cols = [c for c in t.column_names if c not in ("_ingested_at", "_run_id")]
    return sorted(tuple(str(r[c]) for c in cols) for r in t.select(cols).to_pylist())


# ---------------------------------------------------------------------------------------------
# 30 days: small in the slow suite, scale 1 for the report (make load-report)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_load_30_days(load_env, tmp_path):
    n_days = int(os.environ.get("ETL_LOAD_DAYS", "30"))
    scale = float(os.environ.get("ETL_LOAD_SCALE", "0.02"))
    data_dir = Path(os.environ.get("ETL_LOAD_DATA_DIR") or tmp_path / "gen")
    src, totals = sample_landing(data_dir, days=n_days, scale=scale, seed=7)
    days = landing_days(src)
    load = load_env(src, tmp_path / "work")
    t0 = time.monotonic()
    figs = run_days(load, days)
    load.check_exactly_once(totals, [k for keys in days.values() for k in keys])
    summary = check_bounded(figs)
    text = summary_text(summary, figs)
    print("[load] " + text)
    out = Path(os.environ.get("ETL_LOAD_REPORT") or tmp_path / "load.md")  # never the work tree in a test
    out.write_text(
        f"# Load: {n_days} days at scale {scale:g}, day by day through the sensor path\n\n"
        "Generated by `make load-report` (`etl_assets_tests/test_load.py::test_load_30_days`): each "
        "day's files are copied into a landing folder, `landing_arrival_sensor` is evaluated and its run "
        "request executed as the `landing_ingest` job (incremental bronze, in process, `local[2]`).\n\n"
        f"{text}\n\nWall time of the test (without data generation): {time.monotonic() - t0:.0f}s.\n\n"
        + table_md(figs)
        + "\n`rows written` equals `records` every day (no previous row is rewritten) and `files linked` is the "
        "previous version's file count (kept by hard link, nothing copied).\n"
    )
