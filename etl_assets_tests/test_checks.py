"""Data quality checks: each kind passes and fails with the right severity and metadata; the
quality gate keeps the previous version; drift is flagged and still loads; every asset has checks."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from pathlib import Path

import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, materialize

from etl_assets import checks
from etl_assets.definitions import build_definitions
from etl_assets.lake import Lake, Write
from etl_assets.registry import dataset
from etl_assets.sample_data import generate
from etl_assets.settings import Settings
from etl_assets.storage import LocalLandingStore
from etl_assets.transforms.bronze import read_bronze
from etl_assets.transforms.silver import OutcomeCounts
from etl_assets_tests.conftest import TEST_PII

FACT_SCHEMA = (
    "order_id string, customer_id string, product_id string, order_date date, order_ts timestamp, "
    "quantity int, amount decimal(18,2), currency string, amount_usd decimal(18,2), final_status string, "
    "is_revenue boolean"
)


def fact_row(oid, quantity=1, status="PAID"):
    return (oid, "c1", "p1", dt.date(2026, 1, 1), dt.datetime(2026, 1, 1), quantity, Decimal("1.00"), "USD",
            Decimal("1.00"), status, True)


def by_name(outcomes):
    return {o.name: o for o in outcomes}


def test_pandera_schema_and_primary_key_pass(spark):
    df = spark.createDataFrame([fact_row("o1"), fact_row("o2")], FACT_SCHEMA)
    out = by_name(checks.validate(df, "gold/fact_orders"))
    assert out[checks.SCHEMA].passed and out[checks.PRIMARY_KEY].passed
    assert out[checks.SCHEMA].metadata["rows_checked"] == 2


def test_pandera_schema_fails_with_counts_and_sample_keys(spark):
    df = spark.createDataFrame([fact_row("o1", quantity=0), fact_row("o2", status="LOST"), fact_row("o3")], FACT_SCHEMA)
    o = by_name(checks.validate(df, "gold/fact_orders"))[checks.SCHEMA]
    assert not o.passed and o.severity == "ERROR" and o.blocking_failure
    assert o.failed_rows == 2 and sorted(o.sample_keys) == ["o1", "o2"]
    assert "quantity" in o.description and "final_status" in o.description
    result = o.to_result(AssetKey(["gold", "fact_orders"]))
    assert result.severity == AssetCheckSeverity.ERROR and result.metadata["failed_rows"].value == 2


def test_pandera_schema_fails_on_structure(spark):
    df = spark.createDataFrame([("o1", 1)], "order_id string, quantity long")
    o = by_name(checks.validate(df, "gold/fact_orders"))[checks.SCHEMA]
    assert not o.passed
    assert "missing column customer_id" in o.description
    assert "quantity: expected int, got bigint" in o.description


def test_primary_key_duplicates_fail(spark):
    df = spark.createDataFrame([fact_row("o1"), fact_row("o1"), fact_row("o2")], FACT_SCHEMA)
    o = by_name(checks.validate(df, "gold/fact_orders"))[checks.PRIMARY_KEY]
    assert not o.passed and o.failed_rows == 1 and o.sample_keys == ["o1"] and o.severity == "ERROR"


def test_checks_computed_while_staging_equal_validate(spark, tmp_path):
    """PublishCheck (the Pandera checks observed during the staging write, the key checked on the
    staged files) gives exactly what validate gives, failures, counts and sample keys included."""
    good = spark.createDataFrame([fact_row("o1"), fact_row("o2")], FACT_SCHEMA)
    bad = spark.createDataFrame(
        [fact_row("o1", quantity=0), fact_row("o2", status="LOST"), fact_row("o3"), fact_row("o3")], FACT_SCHEMA
    )
    empty = spark.createDataFrame([], FACT_SCHEMA)
    lake = Lake(str(tmp_path))
    staged_outcomes = []
    for i, df in enumerate((good, bad, empty)):
        check = checks.PublishCheck(df, "gold/fact_orders")
        with lake.transaction([Write(check.df, "gold", f"t{i}")]) as staged:
            staged_outcomes.append(check.outcomes(staged.paths[0]))
    alone = [checks.validate(df, "gold/fact_orders") for df in (good, bad, empty)]
    assert [[o.__dict__ for o in outs] for outs in staged_outcomes] == [[o.__dict__ for o in outs] for outs in alone]
    schema, pk = by_name(staged_outcomes[1])[checks.SCHEMA], by_name(staged_outcomes[1])[checks.PRIMARY_KEY]
    assert not schema.passed and schema.failed_rows == 2 and sorted(schema.sample_keys) == ["o1", "o2"]
    assert not pk.passed and pk.failed_rows == 1 and pk.sample_keys == ["o3"]
    assert by_name(staged_outcomes[0])[checks.SCHEMA].passed
    assert by_name(staged_outcomes[2])[checks.SCHEMA].metadata["rows_checked"] == 0


def counts(bronze=100, dup=5, q=10, sup=5, silver=80, reasons=None):
    return OutcomeCounts(bronze, dup, q, sup, silver, reasons or {"orphan_customer": q})


def test_conservation():
    # bronze as published, silver and quarantined as written, duplicate/superseded as classified
    assert checks.conservation_outcome(counts(), 100, 80, 10).passed
    # the silver write lost a row the classification counted: fails, although the counts add up
    bad = checks.conservation_outcome(counts(), 100, 79, 10)
    assert counts().conserved and not bad.passed and bad.failed_rows == 1 and bad.severity == "ERROR"
    assert bad.blocking_failure and "bronze 100 != 99" in bad.description and "classified silver 80" in bad.description
    # the published bronze table has a row the classification never saw
    unseen = checks.conservation_outcome(counts(), 101, 80, 10)
    assert not unseen.passed and "the classification read 100 bronze rows" in unseen.description
    assert unseen.metadata["bronze_rows"] == 101


def test_quarantine_rate_thresholds_from_dq_yaml():
    rules = checks.dq_rules("orders")["quarantine_rate"]
    assert (rules["warn_above"], rules["error_above"]) == (0.10, 0.50)
    ok = checks.quarantine_rate_outcome("orders", counts(q=9, silver=81))  # 9 / 95
    assert ok.passed and ok.metadata["quarantine_rate"] == pytest.approx(9 / 95, abs=1e-6)
    warn = checks.quarantine_rate_outcome("orders", counts(q=20, silver=70))
    assert not warn.passed and warn.severity == "WARN" and not warn.blocking_failure
    assert "orphan_customer=20" in warn.description
    error = checks.quarantine_rate_outcome("orders", counts(q=60, silver=30))
    assert not error.passed and error.severity == "ERROR" and error.blocking_failure


def test_referential_integrity(spark):
    child = spark.createDataFrame([("o1", "c1"), ("o2", "c9"), ("o3", None)], "order_id string, customer_id string")
    parent = spark.createDataFrame([("c1",)], "customer_id string")
    bad = checks.referential_outcome(child, parent, ["customer_id"], "fact_orders.customer_id -> silver/customers")
    assert not bad.passed and bad.failed_rows == 1 and bad.sample_keys == ["c9"]
    good = checks.referential_outcome(child.where("order_id = 'o1'"), parent, ["customer_id"], "x")
    assert good.passed


def test_volume_against_history():
    assert checks.volume_outcome(100, [100, 90]).passed  # too little history: no verdict
    assert checks.volume_outcome(110, [100, 95, 105, 100]).passed
    far = checks.volume_outcome(400, [100, 95, 105, 100])
    assert not far.passed and far.severity == "WARN" and far.metadata["recent_median"] == 100.0


def test_volume_reads_the_event_log(tmp_path):
    key = AssetKey(["t"])
    from dagster import AssetMaterialization

    with DagsterInstance.ephemeral() as instance:
        for n in (10, 20, 30):
            instance.report_runless_asset_event(AssetMaterialization(key, metadata={"dagster/row_count": n}))
        assert checks.row_count_history(instance, key) == [30, 20, 10]


def test_drift_extra_and_missing_columns_flagged_and_loaded(spark, tmp_path):
    ds = dataset("products")
    folder = tmp_path / "warehouse" / "products" / "dt=2026-11-01"
    folder.mkdir(parents=True)
    (folder / "extra.csv").write_text(
        "product_id,sku,product_name,category,unit_price,currency,is_active,last_modified_ts,color\n"
        "p1,S1,Pen,office,1.00,USD,true,2026-11-01T00:00:00Z,red\n"
    )
    (folder / "missing.csv").write_text(
        "product_id,sku,product_name,category,unit_price,currency,last_modified_ts\n"
        "p2,S2,Ink,office,2.00,USD,2026-11-01T00:00:00Z\n"
    )
    store = LocalLandingStore(str(tmp_path))
    read = read_bronze(spark, ds, store, "run")
    rows = {r["product_id"]: r for r in read.df.collect()}
    assert set(rows) == {"p1", "p2"} and rows["p2"]["is_active"] is None and rows["p1"]["is_active"] == "true"
    o = checks.drift_outcome(read.drift)
    assert not o.passed and o.severity == "WARN"
    assert "extra.csv: extra color" in o.description and "missing.csv: missing is_active" in o.description
    assert checks.drift_outcome([]).passed


def test_every_asset_has_checks():
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    checked = {ck.asset_key for ck in graph.asset_check_keys}
    keys = set(graph.get_all_asset_keys())
    assert keys and keys <= checked, f"assets without checks: {sorted(k.to_user_string() for k in keys - checked)}"
    names = {(ck.asset_key.path[0], ck.name) for ck in graph.asset_check_keys}
    # checks that could not fail are not asset checks (lineage set by ingest, reasons built non-empty
    # by the classification): they are unit tests (below, and test_silver.py)
    assert not {n for _, n in names} & {"lineage_complete", "reasons_present"}, sorted(names)
    assert ("silver", checks.CONSERVATION) in names and ("bronze", checks.READABLE) in names
    assert ("quarantine", checks.SCHEMA) in names


def test_bronze_lineage_columns_name_file_day_and_run(spark, tmp_path):
    """Every bronze row names the landed file it came from, its dt folder, the ingestion time and
    the run (what the removed lineage_complete asset check used to re-check on every run)."""
    ds = dataset("customers")
    landing = tmp_path / "landing"
    generate(landing, days=2, seed=9, scale=0.005)
    store = LocalLandingStore(str(landing))
    files = store.dataset_files(ds)
    read = read_bronze(spark, ds, store, "run-lineage")
    rows = read.df.select("_source_file", "_dt", "_ingested_at", "_run_id").collect()
    assert rows and {r["_run_id"] for r in rows} == {"run-lineage"}
    assert all(r["_ingested_at"] is not None for r in rows)
    uris = {f.uri: f.dt for f in files}
    sources = {r["_source_file"] for r in rows}
    assert sources <= set(uris), sorted(sources - set(uris))[:3]  # the landing URI, not Spark's path
    assert {uris[u] for u in sources} == {f.dt for f in files} and len({f.dt for f in files}) == 2
    for r in rows:
        assert r["_dt"] == uris[r["_source_file"]], r


# -- the quality gate ----------------------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_gate_keeps_previous_version_and_skips_downstream(tmp_path, monkeypatch, spark):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    generate(landing, days=2, seed=5, scale=0.01)
    settings = Settings(env="local", landing_uri=str(landing), lake_uri=str(lake), pii_salt=TEST_PII.salt,
                        pii_key=TEST_PII.key)
    defs = build_definitions(settings)
    assets = list(defs.assets)
    resources = defs.resources
    customers = AssetKey(["silver", "customers"])
    first = materialize(
        assets, resources=resources, instance=DagsterInstance.ephemeral(),
        selection=[AssetKey(["bronze", "customers"]), customers, AssetKey(["quarantine", "customers"])],
    )
    assert first.success
    before = _digest(lake / "silver" / "customers")
    # every customer row now counts as "too many quarantined": the gate must block publishing
    real = checks.dq_rules
    monkeypatch.setattr(
        checks, "dq_rules",
        lambda name: {**real(name), "quarantine_rate": {"warn_above": -1.0, "error_above": -1.0}},
    )
    second = materialize(
        assets, resources=resources, instance=DagsterInstance.ephemeral(), raise_on_error=False,
        selection=[customers, AssetKey(["quarantine", "customers"]), AssetKey(["silver", "behavior"]),
                   AssetKey(["quarantine", "behavior"])],
    )
    assert not second.success
    assert _digest(lake / "silver" / "customers") == before  # byte for byte
    # the blocked version was staged (the checks run on the staging write) and then removed
    assert not [p for p in (lake / "_staging" / "silver" / "customers").iterdir()]
    assert not [p for p in (lake / "_staging" / "quarantine" / "customers").iterdir()]
    evaluations = {
        (e.asset_check_evaluation_data.asset_key.to_user_string(), e.asset_check_evaluation_data.check_name):
            e.asset_check_evaluation_data
        for e in second.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    gate = evaluations[("silver/customers", checks.QUARANTINE_RATE)]
    assert not gate.passed and gate.severity == AssetCheckSeverity.ERROR
    assert evaluations[("silver/customers", checks.SCHEMA)].passed
    step_events = {e.step_key: e.event_type_value for e in second.all_events if e.step_key}
    assert "silver_behavior" not in {e.step_key for e in second.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert not any(m.asset_key == customers for m in (ev.event_specific_data.materialization
                   for ev in second.get_asset_materialization_events()))
    assert step_events.get("silver_customers") == "STEP_FAILURE"


def test_conservation_gate_counts_what_was_written(tmp_path, monkeypatch, spark):
    """A silver frame that loses a row on its way to the lake is caught by conservation (the
    classification's own counts still add up) and blocks publishing."""
    from etl_assets.assets import factory

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    generate(landing, days=1, seed=6, scale=0.005)
    settings = Settings(env="local", landing_uri=str(landing), lake_uri=str(lake), pii_salt=TEST_PII.salt,
                        pii_key=TEST_PII.key)
    defs = build_definitions(settings)
    customers = [AssetKey(["silver", "customers"]), AssetKey(["quarantine", "customers"])]
    first = materialize(list(defs.assets), resources=defs.resources, instance=DagsterInstance.ephemeral(),
                        selection=[AssetKey(["bronze", "customers"]), *customers])
    assert first.success
    real = factory.silver_frame
    lost = sorted(r[0] for r in spark.read.format("delta").load(str(lake / "silver" / "customers")).select("customer_id").collect())[0]
    monkeypatch.setattr(factory, "silver_frame", lambda *a: real(*a).where(f"customer_id != '{lost}'"))
    second = materialize(list(defs.assets), resources=defs.resources, instance=DagsterInstance.ephemeral(),
                         selection=customers, raise_on_error=False)
    assert not second.success
    evaluations = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
                   for e in second.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                   and e.asset_check_evaluation_data.asset_key == customers[0]}
    conservation = evaluations[checks.CONSERVATION]
    assert not conservation.passed and conservation.metadata["failed_rows"].value == 1
    assert "silver" in conservation.metadata["what_failed"].value
    assert evaluations[checks.SCHEMA].passed  # nothing else is wrong with the frame
    # the previous version stays
    assert lost in {r[0] for r in spark.read.format("delta").load(str(lake / "silver" / "customers")).select("customer_id").collect()}
