"""The lake in S3: ``etl_all`` with ``ETL_LANDING_URI`` and ``ETL_LAKE_URI`` both ``s3://`` on
moto's server (a real HTTP endpoint on 127.0.0.1, in a process of its own), nothing project-specific beyond the standard
AWS variables. Spark reads the landed objects through S3A (``ETL_S3_READ_MODE=s3a``, no local
copies) and commits Delta tables to the bucket; the tables are read back from S3 with the
``deltalake`` package and compared, row for row, with the same landed data run into a local lake.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, build_sensor_context, evaluate_automation_conditions, instance_for_test
from deltalake import DeltaTable

from etl_assets.checksums import table_checksum
from etl_assets.definitions import build_definitions
from etl_assets.lake import Lake, delta_storage_options
from etl_assets.registry import DATASETS, GOLD_TABLES
from etl_assets.sample_data import generate
from etl_assets.sensors import landing_arrival_sensor
from etl_assets.settings import load_settings
from etl_assets_tests.helpers import etl_all_in_process, run_failures
from etl_assets_tests.moto_server import moto_process

# two whole etl_all runs in the module fixture (S3 and local): make test-slow
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

LAND, LAKE = "etl-s3lake-landing", "etl-s3lake-lake"
SALT, KEY = "s3-lake-salt", "0123456789abcdef0123456789abcdef"
TABLES = ([f"{layer}/{ds.name}" for layer in ("bronze", "silver", "quarantine") for ds in DATASETS]
          + [f"gold/{t}" for t in (*GOLD_TABLES, "dq_scorecard")])


@pytest.fixture(scope="module")
def moto():
    with moto_process() as server:  # deltalake holds the GIL while it waits for S3: not a thread here
        yield server


@pytest.fixture(scope="module")
def runs(moto, spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("s3_lake")
    landing = root / "landing"
    generate(landing, days=1, seed=31, scale=0.003)
    s3 = moto.client()
    s3.create_bucket(Bucket=LAND)
    s3.create_bucket(Bucket=LAKE)
    for f in sorted(p for p in landing.rglob("*") if p.is_file()):
        s3.upload_file(str(f), LAND, f"raw/{f.relative_to(landing).as_posix()}")
    common = {"ETL_ENV": "local", "ETL_PII_SALT": SALT, "ETL_PII_KEY": KEY, "ETL_SPARK_SHUFFLE_PARTITIONS": "2",
              "ETL_ALERT_LOG": "none"}
    s3_env = {**common, "ETL_LANDING_URI": f"s3://{LAND}/raw", "ETL_LAKE_URI": f"s3://{LAKE}/lake"}
    (root / "dagster_home").mkdir()
    with instance_for_test(temp_dir=str(root / "dagster_home")) as instance:  # kept for the sensor test
        in_s3 = etl_all_in_process(s3_env, instance)  # the default ETL_S3_READ_MODE: Spark reads s3a://, no copies
        local = etl_all_in_process({**common, "ETL_LANDING_URI": str(landing), "ETL_LAKE_URI": str(root / "lake")})
        yield dict(in_s3=in_s3, local=local, local_lake=root / "lake", landing=landing, s3=s3, env=s3_env,
                   instance=instance)


def _relative_sources(table, prefix: str):
    """``_source_file`` relative to the landing root, which differs between the two runs."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "_source_file" not in table.column_names:
        return table
    i = table.column_names.index("_source_file")
    rel = pc.replace_substring(table.column(i), prefix, "")
    assert all(v is None or "://" not in v and not v.startswith("/") for v in rel.to_pylist()), prefix
    return table.set_column(i, pa.field("_source_file", pa.string()), rel)


def test_etl_all_runs_with_landing_and_lake_in_s3(runs):
    assert runs["in_s3"].success, run_failures(runs["in_s3"])[:3]
    assert runs["local"].success
    keys = [o["Key"] for page in runs["s3"].get_paginator("list_objects_v2").paginate(Bucket=LAKE, Prefix="lake/")
            for o in page.get("Contents", [])]
    assert any(k.startswith("lake/silver/customers/_delta_log/") for k in keys)
    assert not [k for k in keys if k.startswith("lake/_staging/")], "staged files left in the bucket"
    assert not Path("lake").exists()  # nothing was written to a local folder named after the prefix


def test_s3_tables_hold_the_same_rows_as_the_local_run(runs):
    """Read from S3 with deltalake (the standard AWS variables plus the endpoint), compared with
    the local lake by a checksum over every row (ciphertexts by their plaintext)."""
    from etl_assets.checksums import _decryptor

    decrypt = _decryptor(KEY)
    options = delta_storage_options()
    differences = {}
    for table in TABLES:
        remote = _relative_sources(DeltaTable(f"s3://{LAKE}/lake/{table}", storage_options=options)
                                   .to_pyarrow_table(), f"s3://{LAND}/raw/")
        local = _relative_sources(DeltaTable(str(runs["local_lake"] / table)).to_pyarrow_table(),
                                  f"{runs['landing']}/")
        a, b = table_checksum(remote, table, decrypt), table_checksum(local, table, decrypt)
        if (a["rows"], a["checksum"]) != (b["rows"], b["checksum"]):
            differences[table] = (a["rows"], b["rows"])
    assert not differences, differences
    assert DeltaTable(f"s3://{LAKE}/lake/silver/orders", storage_options=options).to_pyarrow_table().num_rows > 0


def test_publish_log_and_protocol_on_s3(runs):
    lake = Lake(f"s3://{LAKE}/lake")
    published = lake.published().to_pylist()
    named = {f"{r['layer']}/{r['table']}" for r in published}
    assert set(TABLES) <= named and "gold/audit_log" in named
    for table in ("bronze/customers", "silver/customers", "gold/fact_orders"):
        layer, name = table.split("/")
        t = lake.delta(layer, name)
        assert t.protocol().min_reader_version == 1
        last = max((r for r in published if f"{r['layer']}/{r['table']}" == table), key=lambda r: r["version"])
        assert (last["version"], last["rows"]) == (t.version(), lake.rows(layer, name))
    assert sorted(lake.tables()) == sorted(tuple(t.split("/")) for t in TABLES + ["gold/audit_log"])


def test_a_missing_lake_bucket_stops_the_run_naming_the_setting(runs):
    result = etl_all_in_process({"ETL_ENV": "local", "ETL_PII_SALT": SALT, "ETL_PII_KEY": KEY,
                       "ETL_LANDING_URI": f"s3://{LAND}/raw", "ETL_LAKE_URI": "s3://no-such-lake-bucket/lake",
                       "ETL_S3_READ_MODE": "s3a", "ETL_ALERT_LOG": "none"})
    assert not result.success
    messages = " ".join(run_failures(result))
    assert "ETL_LAKE_URI" in messages and "no-such-lake-bucket" in messages
    assert not result.get_asset_materialization_events()


def test_sensor_ingest_and_automation_to_gold_on_the_s3_lake(runs):
    """After the S3 etl_all (same instance): a new FX file lands -> the arrival sensor requests
    bronze/rates only -> incremental ingestion commits to the S3 lake -> the automation
    conditions request silver/quarantine rates and the gold tables downstream -> they run and
    commit. Runs last: it changes the S3 lake the tests above compare."""
    from etl_assets.registry import dataset

    s3, instance = runs["s3"], runs["instance"]
    lake = Lake(f"s3://{LAKE}/lake")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in runs["env"].items():
            mp.setenv(k, v)
        defs = build_definitions(load_settings())
        platform = defs.resources["platform"]
        baseline = landing_arrival_sensor(build_sensor_context(instance=instance, resources={"platform": platform}))
        auto = evaluate_automation_conditions(defs=defs, instance=instance)
        assert auto.total_requested == 0  # etl_all materialized everything in this instance
        # a new day of FX rates arrives
        rates = dataset("rates")
        (src,) = sorted(runs["landing"].glob(f"{rates.landing_prefix}/dt=*/part-0001.csv"))[:1]
        key = f"raw/{rates.landing_prefix}/dt=2030-01-01/part-0001.csv"
        s3.upload_file(str(src), LAND, key)
        rows_before, silver_before = lake.rows("bronze", "rates"), lake.version("silver", "rates")
        tick = landing_arrival_sensor(build_sensor_context(instance=instance, cursor=baseline.cursor,
                                                           resources={"platform": platform}))
        (req,) = tick.run_requests
        assert req.asset_selection == [AssetKey(["bronze", "rates"])]
        ingest = defs.resolve_job_def("landing_ingest").execute_in_process(
            run_config=req.run_config, instance=instance, asset_selection=req.asset_selection, tags=req.tags)
        assert ingest.success
        (mat,) = ingest.get_asset_materialization_events()
        assert (mat.materialization.metadata["ingest_mode"].value, mat.materialization.metadata["files_read"].value) == (
            "incremental", 1)
        assert lake.rows("bronze", "rates") > rows_before
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
        requested = {k for r in result.results if r.true_subset.size and isinstance(r.key, AssetKey) for k in [r.key]}
        assert {AssetKey(["silver", "rates"]), AssetKey(["quarantine", "rates"])} <= requested
        gold = {k for k in requested if k.path[0] == "gold"}
        assert AssetKey(["gold", "fact_orders"]) in gold, sorted(k.to_user_string() for k in requested)
        assert all(k.path[0] in ("silver", "quarantine", "gold") for k in requested)
        path = [AssetKey(["silver", "rates"]), AssetKey(["quarantine", "rates"]), AssetKey(["gold", "fact_orders"])]
        run = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance, asset_selection=path)
        assert run.success, run_failures(run)[:3]
    assert lake.version("silver", "rates") > silver_before
    published = [r for r in lake.published().to_pylist() if r["run_id"] == run.run_id]
    assert {(r["layer"], r["table"]) for r in published} >= {("silver", "rates"), ("gold", "fact_orders")}
    assert {r["version"] for r in published if r["table"] == "fact_orders"} == {lake.version("gold", "fact_orders")}
