"""A hostile and broken input corpus (``corpus.py``), landed in days of its own next to the
generated sample data of the session's shared run (``conftest.lake_run``); one test per kind of
file.

For every file the platform either ingests it (bad rows quarantined with their reasons) or
rejects it with an error naming it (bronze metadata ``unreadable_files``, the log, and the failed
``files_readable`` check), while the other files of the dataset and the other datasets publish.
Conservation holds for every dataset, and nothing outside the landing and lake roots is read or
written: a sentinel folder next to them, reachable only through symbolic links planted in the
landing zone, stays untouched and its content never reaches bronze.

The 200 MB file (``test_200mb_file_is_streamed_not_collected``, slow) runs bronze only, in a
subprocess whose driver accepts at most 4 MiB of task results.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable
import pytest

from etl_assets.ingest import IngestLog
from etl_assets.lake import Lake
from etl_assets.registry import DATASETS
from etl_assets_tests.corpus import (
    ACCOUNT_HEADER,
    BAD_BYTES_JSONL,
    BOM_CSV,
    CUSTOMER_HEADER,
    D1,
    D2,
    DEEP,
    EMPTY,
    EXPECTED_BRONZE_ROWS,
    FIFO,
    FORMULA_VALUES,
    HEADER_ONLY,
    HUGE_LINE,
    HUGE_LINE_BYTES,
    LATIN1_CSV,
    LINKED_DIR,
    LINKED_FILE,
    LONG_CELL,
    LONG_CELL_CHARS,
    MB,
    ODD_NAMES,
    RETYPED,
    SEMICOLONS,
    TRUNCATED,
    _account,
    _csv,
    _nested,
    snapshot,
)
from etl_assets_tests.helpers import materializations, read_table
from etl_assets_tests.moto_server import moto_s3  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


table = read_table


def rows_of(lake: Path, layer: str, name: str, col: str, values) -> dict:
    values = set(values)
    t = DeltaTable(str(lake / layer / name)).to_pyarrow_dataset().to_table()
    mask = pa.compute.is_in(t[col], value_set=pa.array(sorted(values)))
    return {r[col]: r for r in t.filter(mask).to_pylist()}


@pytest.fixture(scope="module")
def hostile(lake_run):
    return lake_run


def bronze_by_source(h, name: str, key: str) -> list[dict]:
    uri = str(h["landing"] / key)
    return [r for r in table(h["lake"], "bronze", name) if r["_source_file"] == uri]


def quarantine_by_source(h, name: str, key: str) -> list[dict]:
    uri = str(h["landing"] / key)
    return [r for r in table(h["lake"], "quarantine", name) if r["_source_file"] == uri]


# --- the run as a whole -----------------------------------------------------------------------
def test_run_succeeds_and_every_table_publishes(hostile):
    result = hostile["result"]
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert result.success, [e.event_specific_data.error.to_string()[:500] for e in failures]
    for ds in DATASETS:
        for layer in ("bronze", "silver", "quarantine"):
            assert f"{layer}/{ds.name}" in hostile["mats"], f"{layer}/{ds.name} not materialized"
    for t in ("fact_orders", "customer_360", "product_performance_daily"):
        assert f"gold/{t}" in hostile["mats"]


# conservation on this run: test_end_to_end.test_conservation_for_every_dataset


def test_nothing_outside_the_roots_is_read_or_written(hostile):
    assert snapshot(hostile["sentinel"]) == hostile["before"]["sentinel"]  # untouched
    assert snapshot(hostile["landing"]) == hostile["before"]["landing"]  # landing is read-only
    assert sorted(p.name for p in hostile["root"].iterdir()) == ["alerts.jsonl", "dagster_home", "lake", "landing",
                                                                 "sentinel"]
    # the linked content never reached bronze
    bronze = table(hostile["lake"], "bronze", "accounts")
    assert not [r for r in bronze if "SENTINEL" in (r["account_id"] or "") + (r["account_name"] or "")]
    assert not [r for r in bronze if str(hostile["sentinel"]) in r["_source_file"]]
    assert all(r["_source_file"].startswith(str(hostile["landing"]) + "/") for r in bronze)


def test_links_and_special_files_are_refused_by_name(hostile):
    landing = hostile["landing"]
    check = hostile["checks"][(("bronze", "accounts"), "files_readable")]
    assert not check.passed and check.severity.value == "ERROR"
    text = check.metadata["what_failed"].value
    assert f"{landing / LINKED_FILE}: symbolic link: never followed" in text
    assert f"{landing / LINKED_DIR}: symbolic link to a folder: never followed" in text
    meta = hostile["mats"]["bronze/accounts"]["unreadable_files"]
    assert str(landing / LINKED_FILE) in meta and str(landing / LINKED_DIR) in meta
    assert any(str(landing / LINKED_FILE) in m for m in hostile["logs"])
    # the FIFO did not hang the run; it is named on opportunities
    opp = hostile["checks"][(("bronze", "opportunities"), "files_readable")]
    assert not opp.passed and f"{landing / FIFO}: not a regular file" in opp.metadata["what_failed"].value


def test_clean_datasets_pass_files_readable(hostile):
    for name in ("rates", "contacts", "customers", "products", "behavior", "order_events"):
        assert hostile["checks"][(("bronze", name), "files_readable")].passed, name


def test_bronze_holds_every_generated_row_plus_the_corpus_rows(hostile):
    """Per dataset: the generator's row count plus what the corpus files hold, counted by hand."""
    for ds in DATASETS:
        assert len(table(hostile["lake"], "bronze", ds.name)) == \
            hostile["totals"][ds.name] + EXPECTED_BRONZE_ROWS[ds.name], ds.name


def test_csv_with_byte_order_mark_and_fractional_timestamps(hostile):
    """A BOM before the header is not part of the first column's name; fractions of a second
    (one digit, nine digits) are kept to the microsecond, offsets converted to UTC."""
    (row,) = bronze_by_source(hostile, "contacts", BOM_CSV)
    assert row["contact_id"] == "CT-BOM-1" and row["_corrupt_record"] is None
    silver = rows_of(hostile["lake"], "silver", "contacts", "contact_id", ["CT-BOM-1"])["CT-BOM-1"]
    utc = dt.timezone.utc
    assert silver["created_at"].astimezone(utc) == dt.datetime(2026, 11, 9, 10, 0, 0, 500000, tzinfo=utc)
    assert silver["last_modified_at"].astimezone(utc) == dt.datetime(2026, 11, 9, 9, 0, 0, 123456, tzinfo=utc)
    assert silver["lifecycle_stage"] == "customer" and silver["email_domain"] == "example.com"


# --- one test per file ------------------------------------------------------------------------
def test_empty_files_are_skipped_and_named(hostile):
    for name, key in EMPTY.items():
        meta = hostile["mats"][f"bronze/{name}"]
        assert str(hostile["landing"] / key) in meta["empty_files"], name
        assert meta["empty_files_skipped"] >= 1
        assert not bronze_by_source(hostile, name, key)


def test_header_only_csv_loads_zero_rows(hostile):
    assert not bronze_by_source(hostile, "contacts", HEADER_ONLY)
    meta = hostile["mats"]["bronze/contacts"]
    assert "schema_drift" not in meta and "empty_files" not in meta
    assert hostile["checks"][(("bronze", "contacts"), "files_readable")].passed


def test_wrong_delimiter_rows_are_kept_and_quarantined_as_malformed(hostile):
    rows = bronze_by_source(hostile, "products", SEMICOLONS)
    assert len(rows) == 3  # every data line, the header excluded
    assert all(r["product_id"] is None for r in rows)
    assert sorted(r["_corrupt_record"] for r in rows) == [
        "PX-SEMI-1;SKU-1;Widget;tools;9.99;USD;true;2026-11-02T10:00:00Z",
        'PX-SEMI-2;SKU-2;"Gadget; large";tools;19.99;USD;true;2026-11-02T10:00:00Z',
        "PX-SEMI-3;SKU-3;Gizmo;tools;5.00;USD;false;2026-11-02T10:00:00Z",
    ]
    q = quarantine_by_source(hostile, "products", SEMICOLONS)
    assert len(q) == 3 and all(r["_reasons"] == ["malformed_record"] for r in q)
    drift = hostile["mats"]["bronze/products"]["schema_drift"]
    assert f"{hostile['landing'] / SEMICOLONS}: no column of the contract in the header (wrong delimiter?)" in drift


def test_invalid_utf8_csv_row_is_quarantined_and_the_valid_row_goes_on(hostile):
    rows = {r["customer_id"] or r["_corrupt_record"]: r for r in bronze_by_source(hostile, "customers", LATIN1_CSV)}
    assert len(rows) == 2
    assert rows["CX-UTF8-1"]["_corrupt_record"] is None and rows["CX-UTF8-1"]["first_name"] == "José"
    bad = rows["CX-LATIN-1"]
    assert "\ufffd" in bad["_corrupt_record"] and bad["_corrupt_record"].startswith("CX-LATIN-1,anna@example.com")
    (q,) = quarantine_by_source(hostile, "customers", LATIN1_CSV)
    # customers has PII: a malformed line is kept only encrypted, its parsed fields nulled
    assert q["_reasons"] == ["malformed_record"] and q["customer_id"] is None
    assert "_corrupt_record" not in q and q["_corrupt_record_enc"]
    assert "CX-UTF8-1" in rows_of(hostile["lake"], "silver", "customers", "customer_id", ["CX-UTF8-1"])


def test_invalid_utf8_json_line_is_quarantined(hostile):
    rows = bronze_by_source(hostile, "order_events", BAD_BYTES_JSONL)
    assert len(rows) == 2
    bad = next(r for r in rows if r["_corrupt_record"])
    assert "OE-BAD-1" in bad["_corrupt_record"] and bad["event_id"] is None
    q = {(r["event_id"] or "") + "|" + ",".join(r["_reasons"]) for r in quarantine_by_source(hostile, "order_events", BAD_BYTES_JSONL)}
    assert "|malformed_record" in q
    assert "OE-OK-1|orphan_order" in q  # the valid line was parsed and checked like any other


def test_truncated_parquet_is_rejected_by_name_and_the_rest_publishes(hostile):
    landing, lake = hostile["landing"], hostile["lake"]
    uri = str(landing / TRUNCATED)
    check = hostile["checks"][(("bronze", "orders"), "files_readable")]
    assert not check.passed
    assert f"{uri}: cannot read Parquet file" in check.metadata["what_failed"].value
    assert uri in check.metadata["sample_keys"].value
    assert uri in hostile["mats"]["bronze/orders"]["unreadable_files"]
    assert any(f"not ingested: {uri}: cannot read Parquet file" in m for m in hostile["logs"])
    assert not bronze_by_source(hostile, "orders", TRUNCATED)
    # every generated order is in bronze (the truncated copy added nothing), silver and gold published
    generated = [r for r in table(lake, "bronze", "orders") if r["_dt"] not in (D1, D2)]  # not the corpus days
    assert len(generated) == hostile["totals"]["orders"]
    assert table(lake, "silver", "orders") and table(lake, "gold", "fact_orders")
    # recorded in the ingest log as processed-and-rejected, with its error
    entries = IngestLog.load(Lake(str(lake)), "orders").entries
    assert entries[TRUNCATED]["status"] == "rejected" and "cannot read Parquet" in entries[TRUNCATED]["error"]


def test_retyped_parquet_columns_are_parsed_or_quarantined(hostile):
    rows = {r["order_id"]: r for r in bronze_by_source(hostile, "orders", RETYPED)}
    assert set(rows) == {"O-RETYPED-1", "O-RETYPED-2"}
    assert rows["O-RETYPED-1"]["quantity"] == "three" and rows["O-RETYPED-2"]["amount"] == "11.0"
    drift = hostile["mats"]["bronze/orders"]["schema_drift"]
    assert f"{hostile['landing'] / RETYPED}: retyped" in drift
    assert "quantity (string, expected int)" in drift and "order_ts (string, expected timestamp)" in drift
    q = {r["order_id"]: r["_reasons"] for r in quarantine_by_source(hostile, "orders", RETYPED)}
    assert "invalid_quantity" in q["O-RETYPED-1"]
    # the parseable one is typed like any other row: no type reason (it may still miss a reference)
    assert not {"invalid_quantity", "invalid_amount", "invalid_order_ts"} & set(q.get("O-RETYPED-2", []))


def test_ten_megabyte_json_line_is_ingested(hostile):
    rows = {r["event_id"]: r for r in bronze_by_source(hostile, "behavior", HUGE_LINE)}
    assert set(rows) == {"EV-HUGE-1", "EV-AFTER-HUGE"}
    assert rows["EV-HUGE-1"]["_corrupt_record"] is None
    assert len(rows["EV-HUGE-1"]["metadata"]) >= HUGE_LINE_BYTES
    silver = rows_of(hostile["lake"], "silver", "behavior", "event_id", ["EV-HUGE-1", "EV-AFTER-HUGE"])
    assert set(silver) == {"EV-HUGE-1", "EV-AFTER-HUGE"}
    assert json.loads(silver["EV-HUGE-1"]["metadata"])["blob"] == "x" * HUGE_LINE_BYTES


def test_one_megabyte_csv_cell_is_ingested(hostile):
    (row,) = bronze_by_source(hostile, "products", LONG_CELL)
    assert row["_corrupt_record"] is None and len(row["product_name"]) == LONG_CELL_CHARS
    silver = rows_of(hostile["lake"], "silver", "products", "product_id", ["PX-LONG-1"])
    # silver trims the value: only the trailing line break of the last repetition can go
    assert silver["PX-LONG-1"]["product_name"] == row["product_name"].strip()


def test_formula_injection_values_are_kept_verbatim_as_data(hostile):
    ids = [f"AX-FORMULA-{i}" for i in range(len(FORMULA_VALUES))]
    silver = rows_of(hostile["lake"], "silver", "accounts", "account_id", ids)
    assert [silver[i]["account_name"] for i in ids] == FORMULA_VALUES
    # stored as Parquet strings (never evaluated); no table of the lake is CSV
    assert not list(hostile["lake"].rglob("*.csv"))


def test_deeply_nested_json(hostile):
    rows = {r["event_id"]: r for r in bronze_by_source(hostile, "behavior", DEEP)}
    # past the JSON parser's nesting limit (1,000): the whole line is kept as a corrupt record
    # (Spark keeps the fields it parsed before the limit, the key among them)
    deep = rows["EV-DEEP-OBJ"]
    assert deep["_corrupt_record"].startswith('{"event_id": "EV-DEEP-OBJ"') and len(deep["_corrupt_record"]) > 5000 * 6
    assert deep["metadata"] is None
    assert rows["EV-DEEP-STR"]["_corrupt_record"] is None and rows["EV-NESTED-OK"]["_corrupt_record"] is None
    q = {r["event_id"]: r["_reasons"] for r in quarantine_by_source(hostile, "behavior", DEEP)}
    assert q["EV-DEEP-OBJ"] == ["malformed_record"]
    # a string holding JSON past the limit: the row goes on, its metadata is not valid -> null
    silver = rows_of(hostile["lake"], "silver", "behavior", "event_id", ["EV-DEEP-STR", "EV-NESTED-OK"])
    assert silver["EV-DEEP-STR"]["metadata"] is None
    assert hostile["mats"]["silver/behavior"]["invalid_json_nulled"] >= 1
    # within the limit: kept as it was
    assert json.loads(silver["EV-NESTED-OK"]["metadata"]) == json.loads(_nested(200))


def test_odd_file_names_keep_exact_lineage(hostile):
    for name, key in ODD_NAMES.items():
        rows = bronze_by_source(hostile, name, key)
        assert len(rows) == 1, (name, key)
        assert rows[0]["_dt"] == key.split("dt=")[1][:10]
    silver = rows_of(hostile["lake"], "silver", "accounts", "account_id", ["AX-ODD-NAME-1"])
    assert silver["AX-ODD-NAME-1"]["_source_file"] == str(hostile["landing"] / ODD_NAMES["accounts"])
    # no bronze row anywhere carries a Spark-style path (file:/..., percent-encoded)
    for ds in DATASETS:
        srcs = {r["_source_file"] for r in table(hostile["lake"], "bronze", ds.name)}
        assert all(s.startswith(str(hostile["landing"]) + "/") for s in srcs), ds.name


# --- 200 MB, streamed -------------------------------------------------------------------------
BIG_BYTES = 200 * MB
MAX_RESULT = "4m"


def _write_big_csv(path: Path, target: int) -> int:
    """A customers CSV of ``target`` bytes, written in 4 MiB chunks (never whole in memory)."""
    header = ",".join(CUSTOMER_HEADER) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, size, i = 0, 0, 0
    pad = "z" * 120
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(header)
        size += len(header)
        while size < target:
            chunk = []
            for _ in range(20_000):
                chunk.append(f"CBIG-{i:08d},user{i}@example.com,First{pad},Last,+1 555 0100,US,retail,"
                             f"2026-01-01,2026-11-01T00:00:00Z\n")
                i += 1
            text = "".join(chunk)
            fh.write(text)
            size += len(text)
            rows += len(chunk)
    return rows


@pytest.mark.slow
def test_200mb_file_is_streamed_not_collected(tmp_path):
    """bronze/customers over one 200 MB CSV in a separate process whose driver accepts at most
    4 MiB of task results (``spark.driver.maxResultSize``): collecting the file to the driver
    would fail the step. The same session refuses a ~24 MB collect (the limit is live), and the
    Python process stays far below the file's size."""
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    big = landing / "warehouse" / "customers" / f"dt={D1}" / "big export.csv"
    rows = _write_big_csv(big, BIG_BYTES)
    assert big.stat().st_size >= BIG_BYTES
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ETL_ENV": "local",
        "ETL_LANDING_URI": str(landing),
        "ETL_LAKE_URI": str(lake),
        "ETL_SPARK_MASTER": "local[2]",
        "ETL_SPARK_DRIVER_MEMORY": "1g",
        "ETL_SPARK_SHUFFLE_PARTITIONS": "2",
        "ETL_SPARK_CONF": f"spark.driver.maxResultSize={MAX_RESULT}",
        "ETL_SPARK_LOG_LEVEL": "ERROR",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    (tmp_path / "dagster_home").mkdir()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(probe)], env=env, capture_output=True, text=True, timeout=1200,
                          cwd=str(tmp_path))
    out = proc.stdout + proc.stderr
    print(f"\n[200MB] bronze of {big.stat().st_size / MB:.0f} MiB ({rows} rows): {time.monotonic() - t0:.1f}s; "
          f"{proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else out[-300:]}")
    assert proc.returncode == 0, out[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["success"], out[-4000:]
    assert report["max_result_size"] == MAX_RESULT
    assert report["collect_refused"], "the maxResultSize limit was not enforced: the proof would prove nothing"
    assert report["bronze_rows"] == rows
    # the Python driver process never held the file: its peak RSS stays far below 200 MB over
    # its size after starting (pyspark + dagster imports alone are ~150-250 MB)
    assert report["rss_growth_mb"] < 100, report


PROBE = r'''
import json, os, resource, sys
from dagster import AssetKey, DagsterInstance
from etl_assets.definitions import defs
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
job = defs.resolve_implicit_global_asset_job_def()
result = job.execute_in_process(instance=DagsterInstance.get(), asset_selection=[AssetKey(["bronze", "customers"])],
                                raise_on_error=False)
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
spark = defs.resources["spark"].get_session()
refused = False
try:
    from pyspark.sql import functions as F
    spark.range(0, 3_000_000).select(F.rand(1).alias("x")).collect()  # ~24 MB of random doubles
except Exception as e:
    refused = "maxResultSize" in str(e)
rows = spark.read.format("delta").load(os.path.join(os.environ["ETL_LAKE_URI"], "bronze", "customers")).count()
print(json.dumps({
    "success": result.success,
    "max_result_size": spark.conf.get("spark.driver.maxResultSize"),
    "collect_refused": refused,
    "bronze_rows": rows,
    "rss_growth_mb": round(rss1 - rss0, 1),
}))
'''


# --- S3: an unsafe key, a zero-byte object and an odd key, through the sensor -------------------
@pytest.mark.parametrize("mode", ["s3a", "stage"])  # Spark reads s3a:// (the default), or boto3 copies
def test_s3_unsafe_key_zero_byte_object_and_odd_key(mode, moto_s3, spark, tmp_path, monkeypatch):  # noqa: F811
    from dagster import AssetKey, Definitions, build_sensor_context, in_process_executor, instance_for_test

    from etl_assets.definitions import build_definitions
    from etl_assets.resources import SparkResource
    from etl_assets.sensors import landing_arrival_sensor
    from etl_assets.settings import Settings
    from etl_assets_tests.conftest import TEST_PII

    bucket, prefix = f"hostile-{mode}", "landing"
    day = f"crm/accounts/dt={D1}"
    escape = f"{day}/../../../../../etc/x.csv"  # 3 segments down, 5 up: out of the staging folder
    odd = f"{day}/Kunden Übersicht (1) + 100%.csv"
    client = moto_s3.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key=f"{prefix}/{day}/part-0001.csv",
                      Body=_csv(ACCOUNT_HEADER, [_account("AX-S3-1"), _account("AX-S3-2")]))
    client.put_object(Bucket=bucket, Key=f"{prefix}/{odd}", Body=_csv(ACCOUNT_HEADER, [_account("AX-S3-ODD")]))
    client.put_object(Bucket=bucket, Key=f"{prefix}/{day}/zero.csv", Body=b"")
    client.put_object(Bucket=bucket, Key=f"{prefix}/{escape}", Body=_csv(ACCOUNT_HEADER, [_account("AX-ESCAPED")]))
    # staging under <root>/staging: the escaping key would land in <root>/etc/x.csv
    root = tmp_path / "root"
    staging, lake, sentinel = root / "staging", root / "lake", root / "etc"
    sentinel.mkdir(parents=True)
    (sentinel / "passwd").write_text("root:x:0:0\n")
    before = snapshot(sentinel)
    monkeypatch.setenv("ETL_STAGING_DIR", str(staging))
    monkeypatch.setenv("ETL_S3_READ_MODE", mode)
    settings = Settings(env="local", landing_uri=f"s3://{bucket}/{prefix}", lake_uri=str(lake),
                        pii_salt=TEST_PII.salt, pii_key=TEST_PII.key)
    prod = build_definitions(settings)
    defs = Definitions(assets=prod.assets, jobs=prod.jobs, sensors=prod.sensors, executor=in_process_executor,
                       resources={"platform": prod.resources["platform"],
                                  "spark": SparkResource(master="local[2]", shuffle_partitions=2, driver_memory="2g")})
    (tmp_path / "dagster_home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        ctx = build_sensor_context(instance=instance, cursor=None, resources={"platform": defs.resources["platform"]})
        (req,) = landing_arrival_sensor(ctx).run_requests
        assert req.asset_selection == [AssetKey(["bronze", "accounts"])]
        assert req.tags["etl/new_objects"] == "3"  # the two files and the zero-byte object; not the unsafe key
        result = defs.resolve_job_def("landing_ingest").execute_in_process(
            run_config=req.run_config, instance=instance, asset_selection=req.asset_selection, tags=req.tags)
    assert result.success
    bronze = DeltaTable(str(lake / "bronze" / "accounts")).to_pyarrow_dataset().to_table().to_pylist()
    assert sorted(r["account_id"] for r in bronze) == ["AX-S3-1", "AX-S3-2", "AX-S3-ODD"]
    assert {r["_source_file"] for r in bronze if r["account_id"] == "AX-S3-ODD"} == {f"s3://{bucket}/{prefix}/{odd}"}
    meta = materializations(result)["bronze/accounts"]
    unsafe_uri = f"s3://{bucket}/{prefix}/{escape}"
    assert unsafe_uri in meta["unreadable_files"]
    assert meta["empty_files"] == [f"s3://{bucket}/{prefix}/{day}/zero.csv"]
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "files_readable"]
    assert not check.passed and f"{unsafe_uri}: unsafe key" in check.metadata["what_failed"].value
    # nothing was written outside the staging folder and the lake; staged copies were removed
    assert snapshot(sentinel) == before
    assert sorted(p.name for p in root.iterdir()) == ["etc", "lake"] + (["staging"] if mode == "stage" else [])
    assert not [p for p in staging.rglob("*") if p.is_file()]
