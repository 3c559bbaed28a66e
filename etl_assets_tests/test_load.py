"""Load: days of landed files delivered one day at a time through the sensor path.

Each day's files (every ``dt=<day>`` folder of the nine datasets) are copied into a landing
folder with that day's arrival time; ``landing_arrival_sensor`` is evaluated with the previous
cursor (``build_sensor_context``, the real sensor) and its run request is executed as the
``landing_ingest`` job in process (incremental bronze for every dataset with new files).

Recorded per day: files, records, sensor tick seconds, ingest seconds, seconds per file and per
1,000 records, cursor bytes, the ingest log (entries, bytes on disk, bytes its commits added that
day, largest single commit), bronze rows and bytes written, Delta files added and removed, the
bronze Delta versions and the bronze tables' live files.

Asserted (nothing timed): every delivered record is in bronze exactly once and every delivered
object is in the ingest log, which describes the live bronze version; each run is one Delta commit
per dataset that writes the new rows only -- the Parquet files the commit adds (its ``add``
actions in ``_delta_log``) hold exactly the rows the run added, which are the materialization's
``rows_written``; the commit removes no file, so every file of the previous version is still in the
table; the ingest log's commit adds one entry per new object and removes nothing, and its largest
write stays bounded (the last days' largest <= 1.5 x the first days' largest); the
bronze bytes written per day do not grow with the days before (the last days' largest <= 2 x the
first days' largest), and the cursor stays bounded (the largest of the last days <= 1.5 x the
largest of the first days). The headline figure, cost per file over the last days vs the first
days, is reported, not asserted.

- ``test_load_small``: 3 days at scale 0.02 of one dataset per format (normal suite), plus an
  overwritten object (only the files holding its rows are rewritten; bronze equals a fresh full
  ingestion) and a late file in a day already ingested (appended; nothing rewritten).
- ``test_load_30_days``: 30 days of all nine datasets, marked ``slow``: at scale 0.02 in
  ``make test-slow``; ``make load-report`` runs it at scale 1 (about 1.44M records, 7 minutes)
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

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import Definitions, SensorResult, build_sensor_context, in_process_executor, instance_for_test

from etl_assets.definitions import build_definitions
from etl_assets.ingest import BronzeConfig, IngestLog, ingest_bronze
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
    log_entries: int  # ingest-log entries of every dataset after the run
    log_disk_bytes: int  # the ingest logs' folders (data files and _delta_log) on disk
    log_written_bytes: int  # bytes of the files the day's ingest-log commits added
    log_largest_write: int  # the largest of those commits
    rows_written: int
    bytes_written: int
    files_written: int  # Parquet files the day's bronze commits added
    files_removed: int  # ... and removed
    bronze_versions: int  # Delta versions of the bronze tables (every dataset), after the run
    bronze_files: int  # live files of the bronze tables, after the run

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


def rows_of(paths) -> int:
    """Rows of Parquet files, from their footers."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


@dataclass
class Commit:
    """The data-file actions of one Delta commit, read from its JSON in ``_delta_log``."""

    version: int
    adds: list[dict]
    removes: list[dict]

    @property
    def added_rows(self) -> int:  # from the statistics Delta logged for each added file
        return sum(json.loads(a["stats"])["numRecords"] for a in self.adds)

    @property
    def added_bytes(self) -> int:
        return sum(int(a["size"]) for a in self.adds)


def delta_commit(table: Path, version: int) -> Commit:
    adds, removes = [], []
    for line in (table / "_delta_log" / f"{version:020d}.json").read_text().splitlines():
        action = json.loads(line)
        if "add" in action:
            adds.append(action["add"])
        elif "remove" in action:
            removes.append(action["remove"])
    return Commit(version, adds, removes)


def ledger_dir(lake: Lake, name: str) -> Path:
    """The ingest log of a dataset (``Lake.ledger``): a small Delta table under ``_ingest/``."""
    return lake.root / "_ingest" / name


def delta_version(table: Path) -> int | None:
    from deltalake import DeltaTable

    return DeltaTable(str(table)).version() if (table / "_delta_log").is_dir() else None


def live_files(table: Path) -> set[str]:
    """The data files of a Delta table's latest version (paths relative to the table)."""
    from deltalake import DeltaTable

    if not (table / "_delta_log").is_dir():
        return set()
    return set(DeltaTable(str(table)).get_add_actions(flatten=True).column("path").to_pylist())


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def values(metadata) -> dict:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


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
        self.delivered: dict[str, set[str]] = {ds.name: set() for ds in self.datasets}
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

    def bronze(self, name: str) -> Path:
        return Path(self.lake.path("bronze", name))

    def bronze_rows(self, name: str) -> int:
        return self.lake.rows("bronze", name) if self.lake.exists("bronze", name) else 0

    def state(self) -> dict[str, tuple]:
        """Per dataset: (bronze version, bronze live files, bronze rows, ingest-log version)."""
        return {ds.name: (delta_version(self.bronze(ds.name)), live_files(self.bronze(ds.name)),
                          self.bronze_rows(ds.name), delta_version(ledger_dir(self.lake, ds.name)))
                for ds in self.datasets}

    def day(self, i: int, day: str, keys: list[str]) -> DayFigures:
        self.deliver(keys, self.t0 + i * DAY_S)
        new_keys = {ds.name: [k for k in keys if k.startswith(ds.landing_prefix + "/")] for ds in self.datasets}
        before = self.state()

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

        meta = {ev.materialization.asset_key.path[-1]: values(ev.materialization.metadata)
                for ev in run.get_asset_materialization_events()}
        assert len(meta) == len(req.asset_selection)
        assert set(meta) == {n for n, ks in new_keys.items() if ks}, (day, sorted(meta))
        after = self.state()
        log_writes, bronze_commits = [], []
        for name, (v0, files0, rows0, log_v0) in before.items():
            v1, files1, rows1, log_v1 = after[name]
            if name not in meta:  # no new file: no commit, nothing written
                assert (v1, files1, rows1, log_v1) == (v0, files0, rows0, log_v0), (day, name)
                continue
            m = meta[name]
            self.delivered[name] |= set(new_keys[name])
            assert m["ingest_mode"] == ("incremental" if v0 is not None else "full"), (day, name, m)
            assert (m["files_read"], m["files_replaced"]) == (len(new_keys[name]), 0), (day, name, m)
            # one Delta commit per dataset and run
            assert v1 == (0 if v0 is None else v0 + 1) == m["delta_version"], (day, name, v0, v1)
            commit = delta_commit(self.bronze(name), v1)
            bronze_commits.append(commit)
            # only new rows were written: the files the commit adds hold exactly the added rows
            # (their Parquet footers and the logged statistics), and it removes no file -- every
            # file of the previous version is still in the table
            added = [self.bronze(name) / a["path"] for a in commit.adds]
            assert rows_of(added) == commit.added_rows == rows1 - rows0 == m["rows_written"], (day, name)
            assert not commit.removes and m["files_removed"] == 0 and m["bytes_removed"] == 0, (day, name)
            assert files1 == files0 | {a["path"] for a in commit.adds} and files0 <= files1, (day, name)
            assert (m["files_written"], m["bytes_written"]) == (len(commit.adds), commit.added_bytes), (day, name, m)
            # the ingest log: one commit after the bronze commit, naming it; it adds the day's
            # objects without rewriting the earlier entries
            log = IngestLog.load(self.lake, name)
            assert log.bronze_version == v1, (day, name, log.bronze_version, v1)
            assert sorted(log.entries) == sorted(self.delivered[name]) and len(log.entries) == m["ingested_objects"]
            assert log_v1 == (0 if log_v0 is None else log_v0 + 1), (day, name, log_v0, log_v1)
            log_commit = delta_commit(ledger_dir(self.lake, name), log_v1)
            assert not log_commit.removes and log_commit.added_rows == len(new_keys[name]), (day, name, log_commit)
            log_writes.append(log_commit.added_bytes)
        return DayFigures(
            day=day,
            files=len(keys),
            records=sum(after[n][2] - before[n][2] for n in after),
            tick_s=tick_s,
            ingest_s=ingest_s,
            cursor_bytes=len(self.cursor or ""),
            log_entries=sum(len(IngestLog.load(self.lake, ds.name).entries) for ds in self.datasets),
            log_disk_bytes=disk_bytes(self.lake.root / "_ingest"),
            log_written_bytes=sum(log_writes),
            log_largest_write=max(log_writes),
            rows_written=sum(m["rows_written"] for m in meta.values()),
            bytes_written=sum(m["bytes_written"] for m in meta.values()),
            files_written=sum(len(c.adds) for c in bronze_commits),
            files_removed=sum(len(c.removes) for c in bronze_commits),
            bronze_versions=sum(v + 1 for v, *_ in after.values() if v is not None),
            bronze_files=sum(len(files) for _, files, *_ in after.values()),
        )

    def check_exactly_once(self, totals: dict, delivered: list[str]) -> None:
        counts = {ds.name: self.lake.rows("bronze", ds.name) for ds in self.datasets}
        assert counts == {ds.name: totals[ds.name] for ds in self.datasets}
        entries = {}
        for ds in self.datasets:
            log = IngestLog.load(self.lake, ds.name)
            assert log.bronze_version == self.lake.version("bronze", ds.name), ds.name
            assert {e["status"] for e in log.entries.values()} == {"ingested"}, ds.name
            # every bronze row comes from a logged object
            sources = set(pc.unique(self.lake.arrow("bronze", ds.name, ["_source_file"]).column(0)).to_pylist())
            assert sources <= {e["uri"] for e in log.entries.values()}, (ds.name, sorted(sources)[:3])
            entries.update(log.entries)
        assert sorted(entries) == sorted(delivered)


def run_days(load: Load, days: dict[str, list[str]]) -> list[DayFigures]:
    out = []
    for i, (day, keys) in enumerate(days.items()):
        f = load.day(i, day, keys)
        out.append(f)
        print(
            f"[load] {f.day}: {f.files} files, {f.records:,} records, tick {f.tick_s:.2f}s, "
            f"ingest {f.ingest_s:.1f}s ({f.s_per_file:.2f}s/file), cursor {f.cursor_bytes} B, "
            f"bronze +{f.files_written} files {f.bytes_written:,} B, {f.bronze_versions} versions, "
            f"ingest log {f.log_disk_bytes:,} B on disk, largest write {f.log_largest_write:,} B",
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
        "log_write_first": max(f.log_largest_write for f in first),
        "log_write_last": max(f.log_largest_write for f in last),
        "bytes_written_first": max(f.bytes_written for f in first),
        "bytes_written_last": max(f.bytes_written for f in last),
        "s_per_file_first": sum(f.ingest_s for f in first) / sum(f.files for f in first),
        "s_per_file_last": sum(f.ingest_s for f in last) / sum(f.files for f in last),
    }
    summary["cost_per_file_ratio"] = summary["s_per_file_last"] / summary["s_per_file_first"]
    if len(figs) >= 3 * w:  # without the first window (cold JVM, first full ingestion)
        steady = figs[w : 2 * w]
        summary["s_per_file_steady"] = sum(f.ingest_s for f in steady) / sum(f.files for f in steady)
        summary["cost_per_file_ratio_steady"] = summary["s_per_file_last"] / summary["s_per_file_steady"]
    # bounded, whatever was ingested before (sizes, not times: these cannot be noisy)
    assert summary["log_write_last"] <= 1.5 * summary["log_write_first"], summary
    assert summary["cursor_last"] <= 1.5 * summary["cursor_first"], summary
    # a day's bronze commits follow that day's data, not the days before (a run that rewrote
    # history would write a multiple of the first days by the end)
    assert summary["bytes_written_last"] <= 2 * summary["bytes_written_first"], summary
    assert all(f.rows_written == f.records and f.files_removed == 0 for f in figs), figs
    # the ingest log written per day follows the day's files, not the days before: each day's
    # log commits add one entry per new object and remove nothing (asserted in Load.day), so
    # the entries grow by exactly the files delivered
    entries = [f.log_entries for f in figs]
    assert [b - a for a, b in zip([0] + entries, entries)] == [f.files for f in figs], entries
    return summary


def table_md(figs: list[DayFigures]) -> str:
    head = (
        "| day | files | records | tick s | ingest s | s/file | s/1000 rec | cursor B | log entries "
        "| log B on disk | log B written | largest log write B | rows written | MB written | files added "
        "| files removed | bronze versions | bronze files |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {f.day} | {f.files} | {f.records:,} | {f.tick_s:.2f} | {f.ingest_s:.1f} | {f.s_per_file:.2f} "
        f"| {f.s_per_krec:.2f} | {f.cursor_bytes:,} | {f.log_entries:,} | {f.log_disk_bytes:,} "
        f"| {f.log_written_bytes:,} | {f.log_largest_write:,} | {f.rows_written:,} | {f.bytes_written / 1e6:.2f} "
        f"| {f.files_written} | {f.files_removed} | {f.bronze_versions} | {f.bronze_files} |"
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
        + f". Bronze bytes written per day, largest: first {w} days {s['bytes_written_first']:,} B, "
        f"last {w} days {s['bytes_written_last']:,} B. Largest ingest-log write: first {w} days "
        f"{s['log_write_first']:,} B, last {w} days {s['log_write_last']:,} B. "
        f"Cursor: {s['cursor_first']:,} B -> {s['cursor_last']:,} B."
    )


@pytest.fixture
def load_env(spark, tmp_path):  # the session Spark fixture: getOrCreate returns it
    def make(src: Path, work: Path, datasets=DATASETS):
        return Load(src, work, instance, datasets)

    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:
        yield make


def ingest_once(load: Load, ds_name: str) -> tuple[dict, Commit]:
    """Tick the sensor and run its request for one dataset's new object(s): the materialization's
    metadata and the bronze commit."""
    result = load.tick()
    (req,) = result.run_requests
    load.cursor = result.cursor
    run = load.run(req)
    (mat,) = run.get_asset_materialization_events()
    assert mat.materialization.asset_key.path == ["bronze", ds_name]
    meta = values(mat.materialization.metadata)
    return meta, delta_commit(load.bronze(ds_name), meta["delta_version"])


def rows_per_source(path: Path) -> dict[str, int]:
    """The rows of one Parquet data file per ``_source_file``."""
    counts = pq.read_table(path, columns=["_source_file"]).column(0).value_counts().to_pylist()
    return {c["values"]: c["counts"] for c in counts}


# ---------------------------------------------------------------------------------------------
# the normal suite: a few days, tiny, one dataset per landed format (CSV, Parquet, JSON Lines)
# ---------------------------------------------------------------------------------------------
SMALL = tuple(dataset(n) for n in ("customers", "orders", "order_events"))


def test_load_small(load_env, tmp_path, spark):
    src, totals = sample_landing(tmp_path / "gen", days=3, scale=0.02, seed=11)
    days = landing_days(src, SMALL)
    load = load_env(src, tmp_path / "work", SMALL)
    t0 = time.monotonic()
    figs = run_days(load, days)
    load.check_exactly_once(totals, [k for keys in days.values() for k in keys])
    summary = check_bounded(figs)
    (tmp_path / "load.md").write_text(table_md(figs))
    print("[load] " + summary_text(summary, figs) + f" ({time.monotonic() - t0:.0f}s)")

    # an overwritten object (same key, new content) in the first day: its rows are replaced, and
    # only the files that held them are rewritten
    ds = dataset("customers")
    bronze = load.bronze(ds.name)
    first_day = next(iter(days))
    key = next(k for k in days[first_day] if k.startswith(ds.landing_prefix + "/"))
    other = next(k for d, keys in days.items() if d != first_day for k in keys if k.startswith(ds.landing_prefix + "/"))
    shutil.copyfile(src / other, load.landing / key)  # another file's rows under the same key
    os.utime(load.landing / key, (load.t0 + 10 * DAY_S,) * 2)
    entries = IngestLog.load(load.lake, ds.name).entries
    uri, other_uri = entries[key]["uri"], entries[other]["uri"]
    v0, files0, rows0 = delta_version(bronze), live_files(bronze), load.bronze_rows(ds.name)
    holding = {f: rows_per_source(bronze / f) for f in files0}  # live file -> {_source_file: rows}
    old_rows = sum(n.get(uri, 0) for n in holding.values())
    new_rows = sum(n.get(other_uri, 0) for n in holding.values())  # the new content: other's rows
    assert old_rows > 0 and new_rows > 0
    later = {a["path"] for v in range(1, v0 + 1) for a in delta_commit(bronze, v).adds}  # days 2-3
    assert later and later <= files0

    meta, commit = ingest_once(load, ds.name)
    assert (meta["ingest_mode"], meta["files_read"], meta["files_replaced"]) == ("incremental", 1, 1), meta
    assert commit.version == v0 + 1
    removed = {r["path"] for r in commit.removes}
    # the removed files are exactly the files that held the object's previous rows ...
    assert removed == {f for f, n in holding.items() if uri in n}, (removed, holding)
    assert (meta["files_removed"], meta["bytes_removed"]) == (len(removed), sum(int(r["size"]) for r in commit.removes))
    # ... the other days' files are kept as they were ...
    assert not removed & later and live_files(bronze) == (files0 - removed) | {a["path"] for a in commit.adds}
    # ... and the files added hold the new content plus the other rows of the removed files, no more
    added = [rows_per_source(bronze / a["path"]) for a in commit.adds]
    copied = sum(c for f in removed for src_file, c in holding[f].items() if src_file != uri)
    assert sum(n.get(uri, 0) for n in added) == new_rows
    assert sum(c for n in added for src_file, c in n.items() if src_file != uri) == copied
    assert new_rows + copied == commit.added_rows == rows_of(bronze / a["path"] for a in commit.adds)
    assert load.bronze_rows(ds.name) == rows0 - old_rows + new_rows
    print(f"[load] overwritten object: {len(removed)} of {len(files0)} files rewritten, {copied} rows copied, "
          f"{new_rows} new; rows_written {meta['rows_written']}")
    assert IngestLog.load(load.lake, ds.name).bronze_version == commit.version
    fresh = Lake(str(tmp_path / "fresh_lake"))
    ingest_bronze(spark, ds, load.platform.landing, fresh, "fresh", BronzeConfig(mode="full"))
    assert multiset(load.lake, ds.name) == multiset(fresh, ds.name)

    # a late file in a day already ingested: appended, nothing rewritten
    last_day = list(days)[-1]
    extra = next(k for k in days[last_day] if k.startswith(ds.landing_prefix + "/"))
    late = extra.replace(f"dt={last_day}/", f"dt={last_day}/late-")
    (load.landing / late).write_bytes((src / extra).read_bytes())
    os.utime(load.landing / late, (load.t0 + 11 * DAY_S,) * 2)
    rows0, files0 = load.bronze_rows(ds.name), live_files(bronze)
    meta, commit = ingest_once(load, ds.name)
    assert (meta["ingest_mode"], meta["files_read"], meta["files_replaced"]) == ("incremental", 1, 0), meta
    assert not commit.removes and meta["files_removed"] == 0
    assert live_files(bronze) == files0 | {a["path"] for a in commit.adds}
    assert load.bronze_rows(ds.name) - rows0 == commit.added_rows == meta["rows_written"] > 0
    assert {src_file for a in commit.adds for src_file in rows_per_source(bronze / a["path"])} == \
        {IngestLog.load(load.lake, ds.name).entries[late]["uri"]}
    fresh2 = Lake(str(tmp_path / "fresh_lake2"))
    ingest_bronze(spark, ds, load.platform.landing, fresh2, "fresh", BronzeConfig(mode="full"))
    assert multiset(load.lake, ds.name) == multiset(fresh2, ds.name)


def multiset(lake: Lake, name: str) -> list[tuple]:
    t = lake.arrow("bronze", name)
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
        "request executed as the `landing_ingest` job (incremental bronze, in process, `local[2]`). "
        "Every run is one Delta commit per dataset with new files (`replaceWhere` on the files read), "
        "then one commit of that dataset's ingest log (a small Delta table under `_ingest/`).\n\n"
        f"{text}\n\nWall time of the test (without data generation): {time.monotonic() - t0:.0f}s.\n\n"
        + table_md(figs)
        + "\n`rows written` equals `records` every day and `files removed` is 0: each commit adds that "
        "day's rows in new Parquet files (`files added`, `MB written`, from the commits' `add` actions "
        "in `_delta_log`) and every file of the previous version stays in the table. `bronze versions` "
        "counts the Delta versions of the nine bronze tables (one more per dataset with new files per "
        "day); `bronze files` is their live data files (no compaction runs, so it grows by `files added` "
        "each day). `log entries` is the object versions in the ingest logs; `log B written` is the "
        "files the day's ingest-log commits added (they remove none).\n"
    )
