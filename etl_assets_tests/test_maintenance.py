"""Lake maintenance on Delta: restore by time travel (audited and logged), OPTIMIZE of bronze
(which incremental ingestion still trusts), and VACUUM that keeps the versions ``_publish`` names."""

from __future__ import annotations

import time

import pytest
from dagster import DagsterInstance
from deltalake import DeltaTable

from etl_assets import audit
from etl_assets.ingest import BronzeConfig, ingest_bronze
from etl_assets.lake import Lake, Write
from etl_assets.maintenance import lake_maintenance, restore_table
from etl_assets.registry import dataset
from etl_assets.resources import PlatformResource
from etl_assets.sample_data import generate
from etl_assets.storage import landing_store
from etl_assets_tests.conftest import TEST_PII, test_spark_resource


def frame(spark, version: int, n: int):
    return spark.createDataFrame([(i, version) for i in range(n)], "id int, version int")


def platform(lake) -> PlatformResource:
    return PlatformResource(landing_uri=str(lake), lake_uri=str(lake), pii_salt=TEST_PII.salt, pii_key=TEST_PII.key)


def test_restore_rolls_back_by_time_travel_and_is_audited(spark, tmp_path):
    lake = Lake(str(tmp_path))
    for v in (1, 2, 3):
        lake.publish(frame(spark, v, v + 1), "gold", "g", run_id=f"run-{v}")
    result = restore_table.execute_in_process(
        run_config={"ops": {"restore_lake_table": {"config": {"table": "gold/g", "version": 0}}}},
        resources={"spark": test_spark_resource(), "platform": platform(tmp_path)},
        instance=DagsterInstance.ephemeral(), tags={"launched_by": "ops-bob"})
    assert result.success
    table = DeltaTable(lake.path("gold", "g"))
    assert table.version() == 3 and table.history(1)[0]["operation"] == "RESTORE"
    assert {r["version"] for r in table.to_pyarrow_table().to_pylist()} == {1}
    last = max((r for r in lake.published().to_pylist() if r["table"] == "g"), key=lambda r: r["published_at"])
    assert (last["table"], last["version"], last["rows"]) == ("g", 3, 2)
    (row,) = [r for r in audit.read(lake).to_pylist() if r["job"] == "restore_table"]
    assert (row["asset"], row["rows"], row["launched_by"]) == ("gold/g", 2, "ops-bob")
    with pytest.raises(ValueError, match="no version 9"):
        lake.restore(spark, "gold", "g", 9)


def test_optimize_compacts_bronze_and_incremental_ingestion_still_trusts_its_log(spark, tmp_path):
    landing, lake = tmp_path / "landing", Lake(str(tmp_path / "lake"))
    generate(landing, days=3, seed=4, scale=0.002)
    store, ds = landing_store(str(landing)), dataset("customers")
    day3 = sorted(landing.glob("warehouse/customers/dt=*"))[-1]
    moved = tmp_path / "later"
    day3.rename(moved)  # deliver the third day after the compaction
    ingest_bronze(spark, ds, store, lake, "run-1", BronzeConfig())
    ingest_bronze(spark, ds, store, lake, "run-2", BronzeConfig(mode="incremental"))  # nothing new
    rows = lake.rows("bronze", "customers")
    files_before = len(lake.delta("bronze", "customers").file_uris())
    stats = lake.optimize(spark, "bronze", "customers", "maint")
    assert stats and stats["operation"] == "OPTIMIZE" and lake.rows("bronze", "customers") == rows
    assert len(lake.delta("bronze", "customers").file_uris()) <= files_before
    moved.rename(day3)
    store = landing_store(str(landing))
    out = ingest_bronze(spark, ds, store, lake, "run-3", BronzeConfig(mode="incremental"))
    assert out.mode == "incremental"  # not a fallback to full: OPTIMIZE changed no data
    assert out.files_read == len(list(day3.glob("*.csv")))
    assert lake.rows("bronze", "customers") > rows


def test_vacuum_keeps_the_version_publish_names(spark, tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    with lake.transaction([Write(frame(spark, 1, 3), "silver", "t"), Write(frame(spark, 1, 2), "quarantine", "t")], "r1"):
        pass
    for v in (2, 3):
        lake.commit([Write(frame(spark, v, 3), "silver", "t")], f"r{v}")
    # a torn pair (a run killed between the silver and quarantine commits): the latest _publish
    # row of silver names an older version than the live one
    lake.log_publish([("silver", "t")], [{"version": 0, "rows": 3}], "pair")
    time.sleep(1.5)
    kept = lake.vacuum(spark, "silver", "t", retention_hours=0)
    assert kept["kept_version"] == 0 and kept["retention_hours"] > 0  # stretched to keep it
    assert {r["version"] for r in DeltaTable(lake.path("silver", "t"), version=0).to_pyarrow_table().to_pylist()} == {1}
    # the quarantine table's latest named version is its current one: older files go
    lake.commit([Write(frame(spark, 2, 1), "quarantine", "t")], "r4")
    lake.log_publish([("quarantine", "t")], [{"version": 1, "rows": 1}], "r4")
    lake.vacuum(spark, "quarantine", "t", retention_hours=0)
    with pytest.raises(Exception):
        DeltaTable(lake.path("quarantine", "t"), version=0).to_pyarrow_table()
    assert len(DeltaTable(lake.path("quarantine", "t")).to_pyarrow_table()) == 1


def test_lake_maintenance_job_compacts_and_logs(spark, tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    lake.commit([Write(frame(spark, 1, 2), "bronze", "customers")], "r1")
    lake.commit([Write(frame(spark, 2, 2), "bronze", "customers", mode="append")], "r2")
    monkeypatch.setenv("ETL_LAKE_RETENTION_HOURS", "200")
    result = lake_maintenance.execute_in_process(
        resources={"spark": test_spark_resource(), "platform": platform(tmp_path)}, instance=DagsterInstance.ephemeral())
    assert result.success
    operations = [e["operation"] for e in DeltaTable(lake.path("bronze", "customers")).history(5)]
    assert "OPTIMIZE" in operations, operations
    assert len(lake.read(spark, "bronze", "customers").collect()) == 4
    assert {(r["table"], r["run_id"]) for r in lake.published().to_pylist()} >= {("customers", result.run_id)}
