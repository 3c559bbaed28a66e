"""S3 arrivals end to end on a real S3 endpoint (moto's ThreadedMotoServer on 127.0.0.1):
upload -> landing_arrival_sensor -> incremental bronze -> automation conditions -> silver/gold,
plus exactly-once under repeats, outages and failures, reprocessing, and 10,000 objects.

The ``test_flow_*`` tests are one scenario in steps on one ``flow``: the ``scenario`` fixture runs
the steps once each, in order, on demand (``test_flow_5`` alone runs steps 1-5 first), and each
test reports its own step, so they pass or fail the same under ``-k``, ``--lf`` or any order.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import botocore.exceptions
import pytest
from dagster import (
    AssetKey,
    AssetObservation,
    Definitions,
    Failure,
    RunRequest,
    SensorResult,
    build_sensor_context,
    evaluate_automation_conditions,
    in_process_executor,
    instance_for_test,
)

from etl_assets.definitions import build_definitions
from etl_assets.ingest import BronzeConfig, IngestConfigError, IngestLog, ingest_bronze, validate_config
from etl_assets.lake import Lake
from etl_assets.registry import DATASETS, dataset
from etl_assets.resources import PlatformResource, SparkResource
from etl_assets.s3 import S3LandingStore, read_mode, s3a_spark_conf
from etl_assets.sample_data import generate
from etl_assets.sensors import ArrivalCursor, evaluate_arrivals, landing_arrival_sensor, scan_landing
from etl_assets.settings import Settings
from etl_assets.storage import LandedFile, LandingError, LandingStore, LocalLandingStore
from etl_assets_tests.conftest import TEST_PII
from etl_assets_tests.helpers import Scenario
from etl_assets_tests.moto_server import moto_s3  # noqa: F401  (fixture)

BUCKET, PREFIX = "landing-test", "landing"
BULK_BUCKET = "landing-bulk"
DAY1, DAY2, DAY3 = "2026-11-01", "2026-11-02", "2026-11-03"
LINEAGE_VOLATILE = ("_ingested_at", "_run_id")
# The scenario lands the five sources of fact_orders (CSV, Parquet and JSON Lines): enough for
# every code path and for a gold table, and half the Spark time of all nine.
FLOW = tuple(dataset(n) for n in ("rates", "customers", "products", "orders", "order_events"))
FLOW_PREFIXES = tuple(d.landing_prefix + "/" for d in FLOW)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def sample_keys(root: Path, day: str | None = None, prefixes=FLOW_PREFIXES) -> list[str]:
    keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [k for k in keys if (day is None or f"/dt={day}/" in k) and k.startswith(prefixes)]


def bronze_rows(lake: Lake, name: str) -> int:
    return lake.rows("bronze", name) if lake.exists("bronze", name) else 0


def bronze_table(lake: Lake, name: str):
    return lake.arrow("bronze", name)


def bronze_multiset(lake: Lake, name: str) -> list[tuple]:
    """Bronze rows without the run-specific lineage values, sorted: equal for equal content."""
    t = bronze_table(lake, name)
    cols = [c for c in t.column_names if c not in LINEAGE_VOLATILE]
    rows = t.select(cols).to_pylist()
    return sorted((tuple(str(r[c]) for c in cols) for r in rows))


@dataclass
class Flow:
    root: Path
    totals: dict
    lake: Lake
    platform: PlatformResource
    defs: Definitions
    instance: object
    client: object
    moto: object = None
    cursor: str | None = None
    auto_cursor: object = None
    state: dict = field(default_factory=dict)

    def tick(self, cursor: str | None, platform: PlatformResource | None = None) -> SensorResult:
        ctx = build_sensor_context(
            instance=self.instance, cursor=cursor, resources={"platform": platform or self.platform}
        )
        return landing_arrival_sensor(ctx)

    def run(self, req: RunRequest, raise_on_error: bool = True):
        job = self.defs.resolve_job_def("landing_ingest")
        return job.execute_in_process(
            run_config=req.run_config,
            instance=self.instance,
            asset_selection=req.asset_selection,
            tags=req.tags,
            raise_on_error=raise_on_error,
        )

    def counts(self) -> dict[str, int]:
        return {ds.name: bronze_rows(self.lake, ds.name) for ds in FLOW}

    def upload(self, keys: list[str], src_root: Path | None = None, rename=None) -> list[str]:
        src_root = src_root or self.root
        out = []
        for k in keys:
            dest = rename(k) if rename else k
            self.client.upload_file(str(src_root / k), BUCKET, f"{PREFIX}/{dest}")
            out.append(dest)
        return out

    def automation(self):
        result = evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.auto_cursor)
        self.auto_cursor = result.cursor
        return result


def requested_keys(result) -> set[AssetKey]:
    keys = set()
    for r in result.results:
        if r.true_subset.size and isinstance(r.key, AssetKey):
            keys.add(r.key)
    return keys


# eager(): every silver/quarantine of a landed dataset and the gold tables whose inputs all
# exist or are requested in the same tick (customer_360 needs CRM data that has not landed)
SILVER_AND_GOLD = (
    {AssetKey(["silver", d.name]) for d in FLOW}
    | {AssetKey(["quarantine", d.name]) for d in FLOW}
    | {AssetKey(["gold", t]) for t in ("fact_orders", "product_performance_daily", "revenue_by_geography")}
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing_sample")
    totals = generate(root, days=2, seed=1, scale=0.01)
    return root, totals


@pytest.fixture(scope="module")
def flow(moto_s3, sample, spark, tmp_path_factory):  # noqa: F811
    root, totals = sample
    client = moto_s3.client()
    client.create_bucket(Bucket=BUCKET)
    lake_dir = tmp_path_factory.mktemp("lake")
    settings = Settings(
        env="local",
        landing_uri=f"s3://{BUCKET}/{PREFIX}",
        lake_uri=str(lake_dir),
        pii_salt=TEST_PII.salt,
        pii_key=TEST_PII.key,
    )
    prod = build_definitions(settings)  # the real wiring: jobs, sensors, executor
    platform = prod.resources["platform"]
    defs = Definitions(
        assets=prod.assets,
        jobs=prod.jobs,
        sensors=prod.sensors,
        executor=in_process_executor,
        resources={
            "platform": platform,
            # the session of the `spark` fixture (getOrCreate), sized for tiny data
            "spark": SparkResource(master="local[2]", shuffle_partitions=2, driver_memory="2g"),
        },
    )
    with instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as instance:
        yield Flow(root, totals, Lake(str(lake_dir)), platform, defs, instance, client, moto=moto_s3)


# ---------------------------------------------------------------------------------------------
# the scenario
# ---------------------------------------------------------------------------------------------
def _step_1_first_files_are_ingested(flow: Flow):
    t0 = time.monotonic()
    # automation baseline: nothing materialized yet, nothing can run (bronze is missing)
    assert flow.automation().total_requested == 0

    day1 = flow.upload(sample_keys(flow.root, DAY1))
    result = flow.tick(None)
    assert isinstance(result, SensorResult) and len(result.run_requests) == 1
    req = result.run_requests[0]
    assert set(req.asset_selection) == {AssetKey(["bronze", d.name]) for d in FLOW}
    assert req.run_key.startswith("arrivals-")
    assert all(c["config"]["mode"] == "incremental" for c in req.run_config["ops"].values())
    obs = {e.asset_key: e for e in result.asset_events if isinstance(e, AssetObservation)}
    assert set(obs) == {AssetKey(["raw", d.system, d.name]) for d in FLOW}
    assert sum(e.metadata["new_objects"].value for e in obs.values()) == len(day1)
    assert all(len(e.tags["dagster/data_version"]) == 32 for e in obs.values())

    run = flow.run(req)
    assert run.success
    counts = flow.counts()
    assert all(counts[d.name] > 0 for d in FLOW), counts
    flow.cursor = result.cursor
    flow.state.update(day1=day1, counts1=counts, run1=run.run_id, req1=req)
    # every landed day-1 object version is in the ingest log, which describes the live bronze version
    m = IngestLog.load(flow.lake, "customers")
    assert m.bronze_version == flow.lake.version("bronze", "customers")
    assert sorted(m.entries) == sorted(k for k in day1 if k.startswith("warehouse/customers/"))
    print(f"\n[s3] tick 1 + bronze run of {len(day1)} objects: {time.monotonic() - t0:.1f}s")


def _step_2_automation_reaches_silver_and_gold(flow: Flow):
    t0 = time.monotonic()
    result = flow.automation()
    requested = requested_keys(result)
    assert requested == SILVER_AND_GOLD, sorted(k.to_user_string() for k in SILVER_AND_GOLD ^ requested)
    # run the requested path to fact_orders (what the automation sensor would launch; the rest
    # of the requested tables would only add Spark minutes to this test)
    path = sorted(k for k in requested if k.path[0] != "gold") + [AssetKey(["gold", "fact_orders"])]
    job = flow.defs.resolve_implicit_global_asset_job_def()
    run = job.execute_in_process(instance=flow.instance, asset_selection=path)
    assert run.success
    for key in path:
        assert flow.lake.exists(*key.path)
    assert flow.lake.rows("gold", "fact_orders") > 0
    # handled: nothing more to do until bronze changes again
    assert flow.automation().total_requested == 0
    print(f"\n[s3] automation requested {len(requested)} assets; ran {len(path)} to gold: {time.monotonic() - t0:.1f}s")


def _step_3_next_tick_only_new_files(flow: Flow):
    t0 = time.monotonic()
    day2 = flow.upload(sample_keys(flow.root, DAY2))
    result = flow.tick(flow.cursor)
    (req,) = result.run_requests
    obs = [e for e in result.asset_events if isinstance(e, AssetObservation)]
    new_keys = [k for e in obs for k in e.metadata["new_keys_sample"].value]
    assert sum(e.metadata["new_objects"].value for e in obs) == len(day2)
    assert set(new_keys) <= set(day2)
    assert int(req.tags["etl/new_objects"]) == len(day2)
    # a re-listing from the same cursor asks for the same run: Dagster drops the repeat by run_key
    assert flow.tick(flow.cursor).run_requests[0].run_key == req.run_key

    run = flow.run(req)
    assert run.success
    counts = flow.counts()
    assert counts == {d.name: flow.totals[d.name] for d in FLOW}  # every delivered record, exactly once
    # incremental kept the day-1 rows as they were (same run id) and added day 2
    t = bronze_table(flow.lake, "orders").to_pydict()
    assert {r for r, d in zip(t["_run_id"], t["_dt"]) if d == DAY1} == {flow.state["run1"]}
    assert sum(1 for d in t["_dt"] if d == DAY1) == flow.state["counts1"]["orders"]
    flow.cursor = result.cursor
    flow.state.update(day2=day2, req2=req, counts2=counts)
    assert requested_keys(flow.automation()) == SILVER_AND_GOLD
    print(f"\n[s3] tick 2 + incremental bronze run of {len(day2)} new objects: {time.monotonic() - t0:.1f}s")


def _step_4_third_tick_requests_nothing(flow: Flow):
    result = flow.tick(flow.cursor)
    assert not result.run_requests and not result.asset_events
    assert result.skip_reason is not None
    assert result.cursor == flow.cursor


def _step_5_rerun_of_same_objects_adds_no_rows(flow: Flow):
    before = flow.counts()
    # a sensor reset (no cursor) asks for every object version again, those of run 2 included
    (req,) = flow.tick(None).run_requests
    assert set(req.asset_selection) == set(flow.state["req2"].asset_selection)
    run = flow.run(req)
    assert run.success
    assert not run.get_asset_materialization_events()  # nothing new: nothing downstream runs
    assert flow.counts() == before


def _step_6_outage_keeps_cursor_and_misses_nothing(flow: Flow):
    late = flow.upload(
        [k for k in flow.state["day2"] if k.startswith("warehouse/customers/")][:1],
        rename=lambda k: f"warehouse/customers/dt={DAY3}/late-delivery.csv",
    )
    cursor = flow.cursor
    flow.moto.stop()
    try:
        t0 = time.monotonic()
        with pytest.raises(botocore.exceptions.BotoCoreError):
            flow.tick(cursor)
        print(f"\n[s3] tick with S3 down failed after {time.monotonic() - t0:.2f}s (bounded retries)")
    finally:
        flow.moto.start()
    assert flow.cursor == cursor  # a failed tick returns no cursor: Dagster keeps the old one
    result = flow.tick(cursor)
    (req,) = result.run_requests
    assert req.asset_selection == [AssetKey(["bronze", "customers"])]
    (obs,) = result.asset_events
    assert obs.metadata["new_keys_sample"].value == late
    assert flow.run(req).success
    flow.cursor = result.cursor
    added = bronze_rows(flow.lake, "customers") - flow.state["counts2"]["customers"]
    assert added > 0
    flow.state["customers_after_late"] = bronze_rows(flow.lake, "customers")


def _step_7_failed_run_does_not_mark_files_ingested(flow: Flow):
    ds = dataset("customers")
    before = bronze_rows(flow.lake, "customers")
    src = next(k for k in flow.state["day1"] if k.startswith("warehouse/customers/"))
    flow.upload([src], rename=lambda k: f"warehouse/customers/dt={DAY3}/retry-me.csv")
    (req,) = flow.tick(flow.cursor).run_requests

    def broken_commit(self, *a, **kw):
        # not retried: Dagster's retry policy would only wait 15 + 30 s to fail the same way
        raise Failure("disk full (injected)", allow_retries=False)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Lake, "_commit", broken_commit)
        assert not flow.run(req, raise_on_error=False).success
    assert bronze_rows(flow.lake, "customers") == before
    m = IngestLog.load(flow.lake, "customers")
    assert f"warehouse/customers/dt={DAY3}/retry-me.csv" not in m.entries  # not marked ingested

    assert flow.run(req).success  # the rerun ingests it, once
    after = bronze_rows(flow.lake, "customers")
    assert after > before

    # killed between the bronze commit and the ingest-log commit: the next run sees that the log
    # does not describe the live bronze version and rebuilds in full; no row is doubled
    flow.upload([src], rename=lambda k: f"warehouse/customers/dt={DAY3}/killed-run.csv")
    real_write, calls = Lake.write_ledger, []

    def dies_before_log(self, *a, **kw):
        calls.append(1)
        raise KeyboardInterrupt("killed after the bronze commit (injected)")

    spark = flow.defs.resources["spark"].get_session()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Lake, "write_ledger", dies_before_log)
        with pytest.raises(KeyboardInterrupt):
            ingest_bronze(spark, ds, flow.platform.landing, flow.lake, "killed-run", BronzeConfig(mode="incremental"))
    published = bronze_rows(flow.lake, "customers")
    assert published > after and calls == [1]
    assert IngestLog.load(flow.lake, "customers").bronze_version != flow.lake.version("bronze", "customers")
    rerun = ingest_bronze(spark, ds, flow.platform.landing, flow.lake, "rerun", BronzeConfig(mode="incremental"))
    assert rerun.mode == "full" and rerun.requested_mode == "incremental"
    m = IngestLog.load(flow.lake, "customers")
    assert m.bronze_version == flow.lake.version("bronze", "customers")
    assert f"warehouse/customers/dt={DAY3}/killed-run.csv" in m.entries
    assert bronze_rows(flow.lake, "customers") == published  # the same rows, once
    assert real_write is Lake.write_ledger
    flow.cursor = flow.tick(flow.cursor).cursor  # consume the arrivals


def _step_8_reprocessing_equals_a_fresh_run(flow: Flow):
    t0 = time.monotonic()
    incremental = {n: bronze_multiset(flow.lake, n) for n in ("customers", "orders", "order_events")}
    # re-ingest chosen days (launchpad/CLI run config)
    req = RunRequest(
        asset_selection=[AssetKey(["bronze", "customers"])],
        run_config={"ops": {"bronze__customers": {"config": {"mode": "days", "days": [DAY1, DAY3]}}}},
    )
    run = flow.run(req)
    assert run.success
    assert bronze_multiset(flow.lake, "customers") == incremental["customers"]
    (mat,) = run.get_asset_materialization_events()
    assert mat.materialization.metadata["ingest_mode"].value == "days"
    # everything (mode full, the default of etl_all); Parquet and JSON Lines here, CSV above
    rebuilt = ("orders", "order_events")
    full = flow.run(RunRequest(asset_selection=[AssetKey(["bronze", n]) for n in rebuilt]))
    assert full.success
    for n in rebuilt:
        assert bronze_multiset(flow.lake, n) == incremental[n], n
    print(f"\n[s3] days (customers) + full (orders, order_events) reprocessing: {time.monotonic() - t0:.1f}s")


@pytest.fixture(scope="module")
def scenario(flow):
    return Scenario(flow, steps=[
        _step_1_first_files_are_ingested,
        _step_2_automation_reaches_silver_and_gold,
        _step_3_next_tick_only_new_files,
        _step_4_third_tick_requests_nothing,
        _step_5_rerun_of_same_objects_adds_no_rows,
        _step_6_outage_keeps_cursor_and_misses_nothing,
        _step_7_failed_run_does_not_mark_files_ingested,
        _step_8_reprocessing_equals_a_fresh_run,
    ])


def test_flow_1_first_files_are_ingested(scenario):
    scenario.check(1)


def test_flow_2_automation_reaches_silver_and_gold(scenario):
    scenario.check(2)


def test_flow_3_next_tick_only_new_files(scenario):
    scenario.check(3)


def test_flow_4_third_tick_requests_nothing(scenario):
    scenario.check(4)


def test_flow_5_rerun_of_same_objects_adds_no_rows(scenario):
    scenario.check(5)


def test_flow_6_outage_keeps_cursor_and_misses_nothing(scenario):
    scenario.check(6)


def test_flow_7_failed_run_does_not_mark_files_ingested(scenario):
    scenario.check(7)


def test_flow_8_reprocessing_equals_a_fresh_run(scenario):
    scenario.check(8)


# ---------------------------------------------------------------------------------------------
# 10,000 objects
# ---------------------------------------------------------------------------------------------
def test_10k_objects_in_one_tick(moto_s3, flow):  # noqa: F811
    n = 10_000
    moto_s3.client().create_bucket(Bucket=BULK_BUCKET)
    backend = moto_s3.backend()
    t0 = time.monotonic()
    for i in range(n):  # bulk setup in-process; the sensor reads it over HTTP like any S3 client
        ds = DATASETS[i % len(DATASETS)]
        key = f"bulk/{ds.landing_prefix}/dt=2026-11-{1 + i % 7:02d}/part-{i:05d}{ds.ext}"
        backend.put_object(BULK_BUCKET, key, b"x\n")
    setup = time.monotonic() - t0
    platform = PlatformResource(
        landing_uri=f"s3://{BULK_BUCKET}/bulk", lake_uri=str(flow.lake.root), pii_salt="s", pii_key="0123456789abcdef"
    )
    t0 = time.monotonic()
    result = flow.tick(None, platform)
    first = time.monotonic() - t0
    (req,) = result.run_requests
    assert int(req.tags["etl/new_objects"]) == n
    assert sum(e.metadata["new_objects"].value for e in result.asset_events) == n
    assert len(req.asset_selection) == len(DATASETS)
    t0 = time.monotonic()
    again = flow.tick(result.cursor, platform)
    second = time.monotonic() - t0
    assert not again.run_requests
    assert not again.asset_events and again.skip_reason is not None
    assert again.cursor == result.cursor
    # the timings are reported, not asserted (a loaded machine is not a slow sensor): the time
    # per tick against Dagster's 60 s sensor evaluation timeout belongs in the benchmark
    print(
        f"\n[10K] setup {setup:.1f}s; first tick listed+planned {n} objects in {first:.1f}s "
        f"({n / first:.0f} objects/s); steady tick (nothing new) {second:.1f}s; "
        f"cursor {len(result.cursor) / 1024:.0f} KiB"
    )


# ---------------------------------------------------------------------------------------------
# the S3 store, the cursor and the local folder (no Spark)
# ---------------------------------------------------------------------------------------------
def test_s3_store_lists_stages_and_rejects_unsafe_keys(moto_s3, tmp_path, monkeypatch):  # noqa: F811
    client = moto_s3.client()
    client.create_bucket(Bucket="store-test")
    client.put_object(Bucket="store-test", Key="p/crm/accounts/dt=2026-11-01/a.csv", Body=b"account_id\n1\n")
    client.put_object(Bucket="store-test", Key="p/crm/accounts/dt=2026-11-01/../../evil.csv", Body=b"x")
    client.put_object(Bucket="store-test", Key="p/crm/accounts/", Body=b"")
    client.put_object(Bucket="store-test", Key="other/crm/accounts/dt=2026-11-01/b.csv", Body=b"x")
    monkeypatch.delenv("ETL_S3_READ_MODE", raising=False)
    assert read_mode() == "s3a"  # the default: Spark reads the objects, no copies
    monkeypatch.setenv("ETL_S3_READ_MODE", "stage")
    store = S3LandingStore("s3://store-test/p", staging_dir=str(tmp_path))
    files = store.list_files()
    assert [f.key for f in files] == ["crm/accounts/dt=2026-11-01/a.csv"]
    assert store.rejected_keys == ["p/crm/accounts/dt=2026-11-01/../../evil.csv"]
    (f,) = store.dataset_files(dataset("accounts"))
    assert f.uri == "s3://store-test/p/crm/accounts/dt=2026-11-01/a.csv" and f.dt == "2026-11-01"
    assert len(f.etag) == 32 and f.size == 13 and f.last_modified > 0
    local = store.local_path(f)
    assert Path(local).read_bytes() == b"account_id\n1\n" and str(tmp_path) in local
    assert store.spark_path(f) == local
    store.release([f])
    assert not Path(local).exists()
    bad = LandedFile(key="crm/../../etc/passwd", uri="s3://x", size=1, etag="e", last_modified=0)
    with pytest.raises(LandingError):
        store.local_path(bad)
    monkeypatch.setenv("ETL_S3_READ_MODE", "s3a")
    assert S3LandingStore("s3://store-test/p").spark_path(f) == "s3a://store-test/p/crm/accounts/dt=2026-11-01/a.csv"
    conf = s3a_spark_conf()
    assert conf["spark.hadoop.fs.s3a.endpoint"] == moto_s3.endpoint
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert "DefaultCredentialsProvider" in conf["spark.hadoop.fs.s3a.aws.credentials.provider"]
    monkeypatch.setenv("ETL_S3_READ_MODE", "hdfs")
    with pytest.raises(ValueError, match="ETL_S3_READ_MODE"):
        read_mode()


def test_s3a_mode_reads_parquet_footers_in_place_and_copies_nothing(moto_s3, tmp_path, monkeypatch):  # noqa: F811
    """In the default s3a mode the driver reads a Parquet footer by ranged GETs (no staged copy)
    and prefetch stages nothing; a truncated file is a bad file, a vanished object a store error."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from etl_assets.storage import StoreReadError
    from etl_assets.transforms.bronze import parquet_schema

    monkeypatch.delenv("ETL_S3_READ_MODE", raising=False)
    client = moto_s3.client()
    client.create_bucket(Bucket="footer-test")
    buf = io.BytesIO()
    pq.write_table(pa.table({"order_id": list(range(50_000)), "amount": [1.5] * 50_000}), buf)
    body = buf.getvalue()
    assert len(body) > 64 * 1024  # the footer is not the whole file
    client.put_object(Bucket="footer-test", Key="p/warehouse/orders/dt=2026-11-01/a.parquet", Body=body)
    client.put_object(Bucket="footer-test", Key="p/warehouse/orders/dt=2026-11-01/cut.parquet", Body=body[:-100])
    store = S3LandingStore("s3://footer-test/p", staging_dir=str(tmp_path / "staging"))
    good, cut = sorted(store.list_files(), key=lambda f: f.key)
    store.prefetch([good, cut])
    with store.open_binary(good) as fh:
        assert parquet_schema(fh, good.uri).names == ["order_id", "amount"]
    with store.open_binary(cut) as fh, pytest.raises(LandingError, match="cannot read Parquet file") as bad:
        parquet_schema(fh, cut.uri)
    assert not isinstance(bad.value, StoreReadError)
    assert not (tmp_path / "staging").exists(), "nothing staged in s3a mode"
    client.delete_object(Bucket="footer-test", Key="p/warehouse/orders/dt=2026-11-01/a.parquet")
    with pytest.raises(StoreReadError, match="a.parquet"):
        store.open_binary(good)
    # a CSV header read from an object that changed since the listing: a store error (the step
    # fails, the next run retries), never a bad file (rejected and skipped until re-delivered)
    from etl_assets.transforms.bronze import _csv_header

    key = "p/crm/accounts/dt=2026-11-01/a.csv"
    client.put_object(Bucket="footer-test", Key=key, Body=b"account_id,name\n1,x\n")
    (csv_file,) = [f for f in store.list_files() if f.key.endswith("a.csv")]
    assert _csv_header(store, csv_file) == ["account_id", "name"]
    client.put_object(Bucket="footer-test", Key=key, Body=b"account_id,name\n2,y\n")  # a new version
    with pytest.raises(StoreReadError, match="a.csv") as changed:
        _csv_header(store, csv_file)
    assert not isinstance(changed.value, LandingError)


class FakeStore(LandingStore):
    root_uri = "fake://"

    def __init__(self, files):
        self.files = files

    def list_files(self, prefix=""):
        return [f for f in self.files if f.key.startswith(prefix)]


def _lf(key, etag, lm):
    return LandedFile(key=key, uri="fake://" + key, size=1, etag=etag, last_modified=lm)


def test_cursor_never_skips_equal_last_modified_and_chunks_across_ticks():
    a = _lf("crm/accounts/dt=2026-11-01/a.csv", "1", 100.0)
    tick = scan_landing(FakeStore([a]), ArrivalCursor(), lookback_s=0)
    # a second object with exactly the cursor's LastModified, and an overwritten one
    b = _lf("crm/accounts/dt=2026-11-01/b.csv", "1", 100.0)
    a2 = _lf(a.key, "2", 100.0)
    tick2 = scan_landing(FakeStore([a2, b]), ArrivalCursor.decode(tick.cursor.encode()), lookback_s=0)
    assert {(f.key, f.etag) for f in tick2.new_files} == {(a.key, "2"), (b.key, "1")}
    # an object older than the newest seen (multipart upload, clock skew): found within the lookback
    c = _lf("crm/accounts/dt=2026-11-01/c.csv", "1", 40.0)
    tick3 = scan_landing(FakeStore([a2, b, c]), tick2.cursor, lookback_s=3600)
    assert [f.key for f in tick3.new_files] == [c.key]
    assert not scan_landing(FakeStore([a2, b, c]), tick3.cursor, lookback_s=3600).new_files

    # a zero time budget: one dataset per tick, a planned sequence covering all nine
    files = [_lf(f"{d.landing_prefix}/dt=2026-11-01/x{d.ext}", "e", 1.0) for d in DATASETS]
    cursor, seen = ArrivalCursor(), []
    for _ in DATASETS:
        t = scan_landing(FakeStore(files), cursor, budget_s=0)
        assert len(t.scans) == 1
        seen += [f.key for f in t.new_files]
        cursor = ArrivalCursor.decode(t.cursor.encode())
    assert sorted(seen) == sorted(f.key for f in files)
    assert not scan_landing(FakeStore(files), cursor).new_files


def test_failing_listing_raises_and_unreadable_cursor_starts_over():
    class Down(FakeStore):
        def list_files(self, prefix=""):
            raise ConnectionError("unreachable")

    with pytest.raises(ConnectionError):
        evaluate_arrivals(Down([]), None)
    f = _lf("crm/accounts/dt=2026-11-01/a.csv", "1", 1.0)
    result = evaluate_arrivals(FakeStore([f]), "not json")
    assert len(result.run_requests) == 1


def test_local_folder_same_code_path(sample, tmp_path):
    root, _ = sample
    landing = tmp_path / "landing"
    keys = sample_keys(root, DAY1, prefixes=("",))
    for k in keys:
        (landing / k).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / k, landing / k)  # keeps the old mtime
    store = LocalLandingStore(str(landing))
    r1 = evaluate_arrivals(store, None)
    assert int(r1.run_requests[0].tags["etl/new_objects"]) == len(keys)
    assert evaluate_arrivals(store, r1.cursor).skip_reason is not None
    time.sleep(0.05)
    late = "web/behavior/dt=2026-11-02/part-0009.jsonl"
    (landing / late).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / sample_keys(root, DAY2, prefixes=("web/",))[-1], landing / late)  # mtime from the past
    os.utime(landing / late, (1_000_000, 1_000_000))
    r3 = evaluate_arrivals(store, r1.cursor)
    (req,) = r3.run_requests
    assert req.asset_selection == [AssetKey(["bronze", "behavior"])] and req.tags["etl/new_objects"] == "1"


def test_config_validation():
    assert validate_config(BronzeConfig()) == []
    assert validate_config(BronzeConfig(mode="days", days=["2026-11-02", "2026-11-01"])) == ["2026-11-01", "2026-11-02"]
    for bad in (BronzeConfig(mode="days"), BronzeConfig(mode="days", days=["2026-13-01"]),
                BronzeConfig(mode="incremental", days=["2026-11-01"])):
        with pytest.raises(IngestConfigError):
            validate_config(bad)
    assert json.loads(ArrivalCursor().encode())["v"] == 1
