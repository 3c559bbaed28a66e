"""``make bench``: the speed, scale and orchestration cost of ``etl_all``, measured.

For each scale (sample data of 7 days, seed 42, cached under ``.state/bench/data/``) three
programs run, each in its own fresh process (so its own JVM) with fresh temp folders:

- ``dagster``: ``dagster job execute -m etl_assets -j etl_all`` as users run it (all checks,
  metadata, lineage, event log in a fresh ``DAGSTER_HOME``);
- ``bare``: the same library functions (``transforms/bronze.py``, ``silver.py``, ``gold.py``) in
  the same order in one SparkSession, writing the same tables, with no Dagster run, no checks
  and no metadata;
- ``floor``: Spark reads every landed file once and writes it once as Parquet (the I/O floor).

Wall seconds (parent-side, process start to exit), records per second, and the peak resident
memory of the driver (python) and the JVM (sum over the process tree, polled with psutil) are
reported, with the machine and its load average, to ``docs/benchmarks.md``. The last line of
stdout is ``bench: scale=1 dagster_s=... bare_s=... floor_s=... dagster_over_bare=...
scale10_over_scale1=...``.

``python -m etl_assets.bench --scales 1 10 --runs 3 --out docs/benchmarks.md``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
MODES = ("dagster", "bare", "floor")
DAYS, SEED = 7, 42


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def _scale_name(scale: float) -> str:
    return f"scale-{scale:g}"


def ensure_data(workdir: Path, scale: float) -> Path:
    """The landing zone of ``scale`` under ``workdir/data``, generated once (marker ``.complete``)."""
    d = workdir / "data" / _scale_name(scale)
    landing = d / "landing"
    if (d / ".complete").exists() and landing.is_dir():
        return landing
    shutil.rmtree(landing, ignore_errors=True)
    d.mkdir(parents=True, exist_ok=True)
    print(f"bench: generating sample data scale={scale:g} into {landing}", file=sys.stderr, flush=True)
    subprocess.run(
        [sys.executable, "-m", "etl_assets.sample_data", "--out", str(landing), "--days", str(DAYS),
         "--seed", str(SEED), "--scale", f"{scale:g}"],
        check=True, env=_child_env({}), stdout=subprocess.DEVNULL,
    )
    (d / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    return landing


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment with this checkout first on PYTHONPATH (so children run the
    same code as the bench, not another installed copy) and ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("ETL_ENV", "local")
    env.update(extra)
    return env


def layer_rows(lake: Path, layer: str) -> int:
    """Rows of every Delta table of one layer of the lake, from the Delta logs."""
    from etl_assets.lake import Lake

    tables = Lake(str(lake))
    return sum(tables.rows(lay, name) for lay, name in tables.tables() if lay == layer)


# ---------------------------------------------------------------------------------------------
# measuring one process tree
# ---------------------------------------------------------------------------------------------
def _is_jvm(p: psutil.Process) -> bool:
    try:
        name = p.name().lower()
        return name == "java" or name.startswith("java")
    except psutil.Error:
        return False


class TreeSampler(threading.Thread):
    """Polls the memory of a process tree (PSS, else RSS): peak python (driver) and peak JVM sums."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_driver = 0
        self.peak_jvm = 0
        self.peak_total = 0
        self.stop = threading.Event()

    def sample(self) -> None:
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return
        driver = jvm = 0
        for p in procs:
            try:
                # PSS: pages shared between processes of the tree (forked children) count once
                rss = p.memory_full_info().pss
            except (psutil.Error, AttributeError):
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
            if _is_jvm(p):
                jvm += rss
            else:
                driver += rss
        self.peak_driver = max(self.peak_driver, driver)
        self.peak_jvm = max(self.peak_jvm, jvm)
        self.peak_total = max(self.peak_total, driver + jvm)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)


@dataclass
class Run:
    mode: str
    scale: float
    wall_s: float
    rc: int
    peak_driver_mb: float
    peak_jvm_mb: float
    peak_total_mb: float
    load_start: tuple
    load_end: tuple
    records: int = 0
    detail: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.records / self.wall_s if self.wall_s else 0.0


def _kill_tree(pid: int) -> None:
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=30)


def measure(cmd: list[str], env: dict[str, str], log: Path, timeout_s: float | None = None
            ) -> tuple[float, int, TreeSampler, tuple, tuple]:
    load_start = os.getloadavg()
    with open(log, "w") as out:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT))
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)  # the program and its JVM
            proc.wait()
            out.write(f"\nbench: killed after the {timeout_s:.0f}s timeout\n")
            rc = -9
        wall = time.monotonic() - started
        sampler.stop.set()
        sampler.join()
    return wall, rc, sampler, load_start, os.getloadavg()


# ---------------------------------------------------------------------------------------------
# the three programs
# ---------------------------------------------------------------------------------------------
def _open_event_log(path: Path):
    """A text stream of a Spark event log file, plain or zstd-compressed (Spark 4's default)."""
    import io

    if path.suffix == ".zstd":
        import pyarrow as pa

        return io.TextIOWrapper(pa.input_stream(str(path), compression="zstd"), errors="replace")
    return open(path, errors="replace")


def spark_profile(eventlog_dir: Path, windows: dict[str, tuple[float, float]] | None = None) -> dict:
    """Jobs, stages, tasks, bytes and executor time from Spark's event log (one application),
    and, given Dagster step windows, the Spark jobs and executor seconds inside each step.
    Counts and bytes do not depend on the machine's load; seconds do."""
    files = [f for f in eventlog_dir.rglob("*") if f.is_file() and f.name.startswith(("events_", "local-", "app-"))
             and not f.name.endswith(".crc")] if eventlog_dir.is_dir() else []
    if not files:
        return {}
    jobs: dict[int, float] = {}
    totals = {"jobs": 0, "stages": 0, "tasks": 0, "input_mb": 0.0, "shuffle_write_mb": 0.0,
              "shuffle_read_mb": 0.0, "output_mb": 0.0, "executor_run_s": 0.0}
    stage_time: list[tuple[float, float]] = []
    mb = 1024 * 1024
    for f in files:
        with _open_event_log(f) as fh:
            for line in fh:
                if "SparkListenerJobStart" not in line and "SparkListenerStageCompleted" not in line:
                    continue
                e = json.loads(line)
                if e.get("Event") == "SparkListenerJobStart":
                    jobs[e["Job ID"]] = e["Submission Time"] / 1000
                    totals["jobs"] += 1
                elif e.get("Event") == "SparkListenerStageCompleted":
                    info = e["Stage Info"]
                    if "Completion Time" not in info:
                        continue
                    totals["stages"] += 1
                    totals["tasks"] += info.get("Number of Tasks", 0)
                    acc = {a.get("Name"): a.get("Value") for a in info.get("Accumulables", [])}
                    run_ms = float(acc.get("internal.metrics.executorRunTime", 0) or 0)
                    totals["executor_run_s"] += run_ms / 1000
                    totals["input_mb"] += float(acc.get("internal.metrics.input.bytesRead", 0) or 0) / mb
                    totals["output_mb"] += float(acc.get("internal.metrics.output.bytesWritten", 0) or 0) / mb
                    totals["shuffle_write_mb"] += float(acc.get("internal.metrics.shuffle.write.bytesWritten", 0) or 0) / mb
                    totals["shuffle_read_mb"] += (
                        float(acc.get("internal.metrics.shuffle.read.remoteBytesRead", 0) or 0)
                        + float(acc.get("internal.metrics.shuffle.read.localBytesRead", 0) or 0)) / mb
                    stage_time.append((info["Completion Time"] / 1000, run_ms / 1000))
    out = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in totals.items()}
    if windows:
        per = {}
        for step, (a, b) in windows.items():
            n = sum(1 for t in jobs.values() if a <= t <= b)
            ex = sum(r for t, r in stage_time if a <= t <= b)
            per[step] = (n, round(ex, 1))
        out["spark_jobs_by_step"] = dict(sorted(per.items(), key=lambda kv: -kv[1][0]))
    return out


class RunFailed(RuntimeError):
    pass


def run_mode(mode: str, scale: float, landing: Path, workdir: Path, keep: bool = False, profile: bool = False,
             timeout_s: float | None = None) -> Run:
    tmp = Path(tempfile.mkdtemp(prefix=f"{mode}-{_scale_name(scale)}-", dir=workdir / "runs"))
    lake = tmp / "lake"
    log = tmp / "output.log"
    extra = {"ETL_LANDING_URI": str(landing), "ETL_LAKE_URI": str(lake)}
    eventlog = tmp / "spark-events"
    if profile:
        eventlog.mkdir()
        conf = os.environ.get("ETL_SPARK_CONF", "")
        extra["ETL_SPARK_CONF"] = ",".join(
            [c for c in [conf] if c] + ["spark.eventLog.enabled=true", f"spark.eventLog.dir=file://{eventlog}"])
    if mode == "dagster":
        home = tmp / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "etl_assets" / "instance" / "dagster.local.yaml", home / "dagster.yaml")
        extra["DAGSTER_HOME"] = str(home)
        dagster = Path(sys.executable).with_name("dagster")
        cmd = [str(dagster) if dagster.exists() else "dagster", "job", "execute", "-m", "etl_assets", "-j", "etl_all"]
    else:
        cmd = [sys.executable, "-m", "etl_assets.bench", mode, "--landing", str(landing), "--lake", str(lake),
               "--report", str(tmp / "report.json")]
    wall, rc, s, l0, l1 = measure(cmd, _child_env(extra), log, timeout_s)
    mb = 1024 * 1024
    run = Run(mode, scale, round(wall, 2), rc, round(s.peak_driver / mb), round(s.peak_jvm / mb),
              round(s.peak_total / mb), tuple(round(x, 2) for x in l0), tuple(round(x, 2) for x in l1))
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise RunFailed(f"bench: {mode} scale={scale:g} failed (rc={rc}) after {wall:.0f}s, log {log} (kept):\n"
                        + "\n".join(tail))
    windows = None
    if mode == "dagster":
        run.detail = dagster_profile(Path(extra["DAGSTER_HOME"]), wall)
        windows = run.detail.pop("windows")
    else:
        run.detail = json.loads((tmp / "report.json").read_text())
    if profile:
        run.detail["spark"] = spark_profile(eventlog, windows)
    run.records = layer_rows(lake, "floor" if mode == "floor" else "bronze")
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return run


def dagster_profile(home: Path, wall: float) -> dict:
    """Step durations, check and metadata seconds of the (only) run in the instance at ``home``."""
    from dagster import DagsterEventType, DagsterInstance

    instance = DagsterInstance.from_config(str(home))
    try:
        run = instance.get_runs(limit=1)[0]
        starts, steps, windows = {}, {}, {}
        checks_s = metadata_s = 0.0
        run_start = run_end = None
        for e in instance.all_logs(run.run_id):
            ev = e.dagster_event
            if ev is None:
                continue
            t = e.timestamp
            if ev.event_type == DagsterEventType.RUN_START:
                run_start = t
            elif ev.event_type in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
                run_end = t
            elif ev.event_type == DagsterEventType.STEP_START:
                starts[ev.step_key] = t
            elif ev.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                steps[ev.step_key] = round(t - starts.get(ev.step_key, t), 2)
                windows[ev.step_key] = (starts.get(ev.step_key, t), t)
            elif ev.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                md = ev.event_specific_data.materialization.metadata
                checks_s += float(md["checks_duration_s"].value) if "checks_duration_s" in md else 0.0
                metadata_s += float(md["metadata_duration_s"].value) if "metadata_duration_s" in md else 0.0
        in_run = (run_end - run_start) if run_start and run_end else None
        return {
            "status": str(run.status.value),
            "run_s": round(in_run, 2) if in_run else None,
            "outside_run_s": round(wall - in_run, 2) if in_run else None,  # CLI start, code load, JVM start
            "steps_s": round(sum(steps.values()), 2),
            "checks_s": round(checks_s, 2),
            "metadata_s": round(metadata_s, 2),
            "steps": dict(sorted(steps.items(), key=lambda kv: -kv[1])),
            "windows": windows,
        }
    finally:
        instance.dispose()


def _session():
    from etl_assets.resources import SparkResource
    from etl_assets.settings import load_settings

    return SparkResource.from_settings(load_settings().spark).get_session()


def bare(landing: str, lake_uri: str) -> dict:
    """The pipeline without Dagster: the library functions in ``etl_all``'s order, no checks."""
    from pyspark import StorageLevel

    from etl_assets.assets.gold import BUILDERS, GOLD_DEPS
    from etl_assets.lake import Lake, Write
    from etl_assets.registry import DATASETS, silver_build_order
    from etl_assets.settings import load_settings
    from etl_assets.storage import landing_store
    from etl_assets.transforms.bronze import bronze_schema, read_bronze
    from etl_assets.transforms.silver import Pii, classify, known_currencies, quarantine_frame, silver_frame

    t0 = time.monotonic()
    settings = load_settings()
    spark = _session()
    timings = {"session_s": time.monotonic() - t0}
    store, lake = landing_store(landing), Lake(lake_uri)
    pii = Pii(salt=settings.pii_salt, key=settings.pii_key)
    t = time.monotonic()
    for ds in DATASETS:  # as ingest.ingest_bronze in full mode, without the ingest log
        read = read_bronze(spark, ds, store, "bench-bare")
        lake.commit([Write(read.df.select(*[f.name for f in bronze_schema(ds).fields]), "bronze", ds.name)])
    timings["bronze_s"] = time.monotonic() - t
    t = time.monotonic()
    for ds in silver_build_order():  # as assets/factory.py silver_asset, without checks/metadata
        bronze = lake.read(spark, "bronze", ds.name)
        targets = {r.target: lake.read(spark, "silver", r.target) for r in ds.references}
        fx = lake.read(spark, "silver", "rates") if "rates" in ds.upstream_silver else None
        known = known_currencies(fx)
        classified = classify(bronze, ds, targets, fx, known).persist(StorageLevel.MEMORY_AND_DISK)
        lake.publish(silver_frame(classified, ds, pii), "silver", ds.name)
        lake.publish(quarantine_frame(classified, ds, pii), "quarantine", ds.name)
        classified.unpersist()
    timings["silver_s"] = time.monotonic() - t
    t = time.monotonic()
    for name, deps in GOLD_DEPS.items():  # as assets/gold.py gold_asset (dq_scorecard is run metadata)
        inputs = {f"{layer}/{tb}": lake.read(spark, layer, tb) for layer, tb in deps}
        lake.publish(BUILDERS[name](inputs), "gold", name)
    timings["gold_s"] = time.monotonic() - t
    spark.stop()
    return {k: round(v, 2) for k, v in timings.items()}


def floor(landing: str, lake_uri: str) -> dict:
    """Every landed file read once by Spark and committed once to Delta (no transformation)."""
    from pyspark.sql import types as T

    from etl_assets.lake import Lake, Write
    from etl_assets.registry import DATASETS
    from etl_assets.schemas import bronze_read_schema
    from etl_assets.storage import landing_store

    t0 = time.monotonic()
    spark = _session()
    timings = {"session_s": time.monotonic() - t0}
    store, lake = landing_store(landing), Lake(lake_uri)
    t = time.monotonic()
    for ds in DATASETS:
        paths = [store.spark_path(f) for f in store.dataset_files(ds) if f.size]
        if not paths:
            continue
        if ds.format == "csv":  # the bronze reader's options, all columns as strings
            schema = T.StructType([T.StructField(c, T.StringType()) for c in ds.source_columns])
            df = (spark.read.schema(schema).option("header", True).option("enforceSchema", True)
                  .option("escape", '"').option("multiLine", True).csv(paths))
        elif ds.format == "jsonl":
            df = spark.read.schema(bronze_read_schema(ds)).json(paths)
        else:
            df = spark.read.parquet(*paths)
        lake.commit([Write(df, "floor", ds.name)])
    timings["io_s"] = time.monotonic() - t
    spark.stop()
    return {k: round(v, 2) for k, v in timings.items()}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def machine() -> dict:
    import pyspark

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    except (OSError, IndexError):
        java = "unknown"
    try:
        import dagster

        dagster_v = dagster.__version__
    except ImportError:  # pragma: no cover
        dagster_v = "?"
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "cpu": cpu or platform.processor() or "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "java": java,
        "python": platform.python_version(),
        "spark": pyspark.__version__,
        "dagster": dagster_v,
    }


def _median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def summarise(results: dict[float, dict[str, list[Run]]]) -> dict:
    out = {}
    for scale, modes in results.items():
        s = {m: {"wall_s": round(_median(rs, "wall_s"), 2), "runs": len(rs),
                 "rps": round(statistics.median(r.rps for r in rs)),
                 "records": rs[0].records,
                 "peak_driver_mb": max(r.peak_driver_mb for r in rs),
                 "peak_jvm_mb": max(r.peak_jvm_mb for r in rs),
                 "peak_total_mb": max(r.peak_total_mb for r in rs)} for m, rs in modes.items()}
        if "dagster" in s and "bare" in s:
            s["dagster_over_bare"] = round(s["dagster"]["wall_s"] / s["bare"]["wall_s"], 2)
        if "dagster" in s and "floor" in s:
            s["dagster_over_floor"] = round(s["dagster"]["wall_s"] / s["floor"]["wall_s"], 2)
        if "dagster" in modes:
            d = modes["dagster"]
            s["checks_share"] = round(statistics.median(r.detail["checks_s"] / r.wall_s for r in d), 3)
            s["metadata_share"] = round(statistics.median(r.detail["metadata_s"] / r.wall_s for r in d), 3)
        out[scale] = s
    return out


def _fmt(x, nd=2) -> str:
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def bench_line(summary: dict) -> str:
    one = summary.get(1.0) or summary.get(1) or summary[min(summary)]
    scale = next(k for k, v in summary.items() if v is one)
    ten = summary.get(10.0) or summary.get(10)
    d = one.get("dagster", {}).get("wall_s")
    ratio = round(ten["dagster"]["wall_s"] / d, 2) if ten and ten is not one and d and "dagster" in ten else None
    return (
        f"bench: scale={scale:g} dagster_s={_fmt(d)} bare_s={_fmt(one.get('bare', {}).get('wall_s'))} "
        f"floor_s={_fmt(one.get('floor', {}).get('wall_s'))} dagster_over_bare={_fmt(one.get('dagster_over_bare'))} "
        f"scale10_over_scale1={_fmt(ratio)}"
    )


def targets(summary: dict) -> list[str]:
    """The issue's targets, each with the measured figure and met / not met (n/a: not measured)."""
    scales = sorted(summary)
    one, ten = summary.get(1.0, {}), summary.get(10.0, {})
    rows = [("dagster/bare at scale 1", one.get("dagster_over_bare"), 1.3, ""),
            ("dagster/bare at scale 10", ten.get("dagster_over_bare"), 1.15, "")]
    if one.get("dagster") and ten.get("dagster"):
        rows.append(("scale10/scale1 (dagster)", round(ten["dagster"]["wall_s"] / one["dagster"]["wall_s"], 2), 6, ""))
    else:
        rows.append(("scale10/scale1 (dagster)", None, 6, ""))
    big = summary[scales[-1]] if scales else {}
    peak = big.get("dagster", {}).get("peak_total_mb")
    rows.append((f"peak memory at scale {scales[-1]:g} (GB, dagster: driver + JVM)" if scales else "peak memory (GB)",
                 round(peak / 1024, 2) if peak is not None else None, 6, ""))
    for scale in scales:
        s = summary[scale]
        if s.get("checks_share") is not None:
            share = round((s["checks_share"] + (s.get("metadata_share") or 0)) * 100, 1)
            rows.append((f"checks + metadata share at scale {scale:g} (%)", share, 20, ""))
    out = ["| target | measured | limit | met |", "| --- | --- | --- | --- |"]
    for name, value, limit, _ in rows:
        met = "n/a" if value is None else ("yes" if value <= limit else "**no**")
        out.append(f"| {name} | {_fmt(value)} | <= {limit:g} | {met} |")
    return out


def render(results: dict, summary: dict, mach: dict, started: str, line: str) -> str:
    L = []
    L.append("## Latest run (`make bench`)\n")
    L.append(f"Started {started}. Machine: {mach['cores']} cores, {mach['memory_gb']} GB, {mach['cpu']}, "
             f"{mach['os']}; {mach['java']}; Python {mach['python']}, Spark {mach['spark']}, "
             f"Dagster {mach['dagster']}. The load average (1/5/15 min) at the start and end of every run "
             "is listed below: on a shared machine, read the figures with it.\n")
    L.append("| scale | program | runs | wall s (median) | records | records/s | peak driver MB | peak JVM MB | peak total MB |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for scale, s in summary.items():
        for m in MODES:
            if m in s:
                r = s[m]
                L.append(f"| {scale:g} | {m} | {r['runs']} | {r['wall_s']:.2f} | {r['records']:,} | {r['rps']:,} | "
                         f"{r['peak_driver_mb']:,} | {r['peak_jvm_mb']:,} | {r['peak_total_mb']:,} |")
    L.append("")
    L.append("| scale | dagster/bare | dagster/floor | checks share of dagster wall | metadata share |")
    L.append("| --- | --- | --- | --- | --- |")
    for scale, s in summary.items():
        L.append(f"| {scale:g} | {_fmt(s.get('dagster_over_bare'))} | {_fmt(s.get('dagster_over_floor'))} | "
                 f"{_fmt(s.get('checks_share') and s['checks_share'] * 100, 1)}% | "
                 f"{_fmt(s.get('metadata_share') and s['metadata_share'] * 100, 1)}% |")
    scales = sorted(summary)
    if len(scales) > 1 and all("dagster" in summary[x] for x in scales):
        a, b = scales[0], scales[-1]
        L.append(f"\nscale{b:g}/scale{a:g} for dagster: "
                 f"{summary[b]['dagster']['wall_s'] / summary[a]['dagster']['wall_s']:.2f} "
                 f"(data x{b / a:g}).")
    L.append("")
    L += targets(summary)
    L.append("\nEvery run (wall s; load average 1/5/15 min at start -> end; details):\n")
    L.append("| scale | program | wall s | load at start | load at end | details |")
    L.append("| --- | --- | --- | --- | --- | --- |")
    for scale, modes in results.items():
        for m, rs in modes.items():
            for r in rs:
                det = dict(r.detail)
                steps = det.pop("steps", None)
                if steps:
                    det["slowest_steps"] = ", ".join(f"{k} {v}" for k, v in list(steps.items())[:6])
                sp = dict(det.pop("spark", None) or {})
                by_step = sp.pop("spark_jobs_by_step", None)
                if sp:
                    det["spark"] = ", ".join(f"{k} {v}" for k, v in sp.items())
                if by_step:
                    det["spark_jobs_by_step"] = ", ".join(f"{k} {n}" for k, (n, _) in list(by_step.items())[:8])
                L.append(f"| {scale:g} | {m} | {r.wall_s:.2f} | {'/'.join(map(str, r.load_start))} | "
                         f"{'/'.join(map(str, r.load_end))} | {'; '.join(f'{k}={v}' for k, v in det.items())} |")
    L.append(f"\n`{line}`\n")
    return "\n".join(L)


def write_doc(out: Path, section: str) -> None:
    """Replace the generated section of ``out`` (between markers), keep the hand-written rest."""
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    text = out.read_text() if out.exists() else "# Benchmarks\n\n" + begin + "\n" + end + "\n"
    if begin not in text:
        text = text.rstrip() + "\n\n" + begin + "\n" + end + "\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(head + begin + "\n" + section + "\n" + end + tail)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("bare", "floor"):
        p = argparse.ArgumentParser(prog=f"python -m etl_assets.bench {argv[0]}")
        p.add_argument("--landing", required=True)
        p.add_argument("--lake", required=True)
        p.add_argument("--report", required=True)
        a = p.parse_args(argv[1:])
        report = (bare if argv[0] == "bare" else floor)(a.landing, a.lake)
        Path(a.report).write_text(json.dumps(report))
        return 0
    p = argparse.ArgumentParser(prog="python -m etl_assets.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0])
    p.add_argument("--runs", type=int, default=3, help="runs per program at the smallest scale (1 at larger ones)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--out", default="docs/benchmarks.md", help="markdown file whose generated section is rewritten")
    p.add_argument("--workdir", default=str(ROOT / ".state" / "bench"), help="cached data and run folders")
    p.add_argument("--keep", action="store_true", help="keep each run's lake, DAGSTER_HOME and log")
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--timeout", type=float, default=7200, help="seconds after which a run is killed and reported failed")
    p.add_argument("--profile", action="store_true",
                   help="record Spark's event log per run: jobs, stages, bytes, executor time (per Dagster step)")
    a = p.parse_args(argv)
    workdir = Path(a.workdir).absolute()
    (workdir / "runs").mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    mach = machine()
    scales = sorted(set(a.scales))
    smallest = scales[0]
    landings = {scale: ensure_data(workdir, scale) for scale in scales}
    # one round of the smallest scale, then the larger scales, then the remaining rounds: the
    # scale ratio is known early, and a partial bench (see the doc) still has every scale
    rounds = [(smallest, 1)] + [(s, 1) for s in scales[1:]] + [(smallest, i) for i in range(2, a.runs + 1)]
    results: dict[float, dict[str, list[Run]]] = {s: {m: [] for m in a.modes} for s in scales}
    total = len(rounds) * len(a.modes)
    done = 0
    failures: list[str] = []
    for scale, i in rounds:
        runs = a.runs if scale == smallest else 1
        for m in a.modes:  # interleaved, so a load spike hits every program alike
            done += 1
            try:
                r = run_mode(m, scale, landings[scale], workdir, keep=a.keep, profile=a.profile, timeout_s=a.timeout)
            except RunFailed as e:  # reported, the other runs go on
                print(str(e), file=sys.stderr, flush=True)
                failures.append(str(e).splitlines()[0])
                continue
            results[scale][m].append(r)
            print(f"bench: scale={scale:g} {m} run {i}/{runs}: {r.wall_s:.2f}s, {r.records:,} records, "
                  f"peak driver {r.peak_driver_mb} MB, JVM {r.peak_jvm_mb} MB, load {r.load_start[0]}->{r.load_end[0]}"
                  + (f", checks {r.detail['checks_s']}s, metadata {r.detail['metadata_s']}s" if m == "dagster" else ""),
                  flush=True)
            if a.out and done < total:  # a partial table survives an interrupted bench
                part = {s: {k: v for k, v in ms.items() if v} for s, ms in results.items()}
                part = {s: ms for s, ms in part.items() if ms}
                summary = summarise(part)
                note = f"**Partial: {done} of {total} runs finished when this was written.**\n\n"
                note += "".join(f"- failed: {f}\n" for f in failures) + ("\n" if failures else "")
                write_doc(Path(a.out), note + render(part, summary, mach, started, bench_line(summary)))
    results = {s: {k: v for k, v in ms.items() if v} for s, ms in results.items()}
    results = {s: ms for s, ms in results.items() if ms}
    if not results:
        print("bench: no run finished", file=sys.stderr)
        return 1
    summary = summarise(results)
    line = bench_line(summary)
    if a.out:
        note = "".join(f"- failed: {f}\n" for f in failures) + ("\n" if failures else "")
        write_doc(Path(a.out), note + render(results, summary, mach, started, line))
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": mach, "summary": {str(k): v for k, v in summary.items()},
                                            "runs": [asdict(r) for modes in results.values() for rs in modes.values() for r in rs]},
                                           indent=1, default=str))
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
