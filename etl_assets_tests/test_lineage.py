"""Column lineage derived from Spark plans (etl_assets/lineage.py).

1. Hand-checked expectations on the plans the assets build, from empty inputs (no Spark job):
   the rule is "columns whose values flow into the column"; filter-, join- and grouping-only
   columns are excluded, a count(*) depends on the keys it counts per.
2. The walker on small synthetic plans (union, aggregate, window, outer-join flag, Connect).
3. A real ``etl_all`` run on tiny data: every silver, quarantine and gold materialization carries
   ``dagster/column_lineage`` equal to the plan-derived lineage, pointing at real asset keys, and
   numeric metrics (rows, bytes, duration, rows/s, per-reason counts, pass and quarantine rates).
"""

from __future__ import annotations

import logging

import pytest
from dagster import AssetKey, DagsterInstance, TableColumnLineage
from pyspark.sql import Window
from pyspark.sql import functions as F

from etl_assets.docs import derived_lineage, quarantine_reasons
from etl_assets.lineage import column_lineage_metadata, derive_lineage, lake_table_resolver
from etl_assets.registry import DATASETS, GOLD_TABLES
from etl_assets.sample_data import generate
from etl_assets.settings import Settings
from etl_assets_tests.conftest import TEST_PII


@pytest.fixture(scope="module")
def plan_lineage(spark):
    lineage, _types = derived_lineage(spark)
    return lineage


def deps(lineage, table, column) -> set[str]:
    return {f"{t}.{c}" for t, c in lineage[table][column]}


# -- 1. hand-checked expectations ------------------------------------------------------------


def test_silver_orders_amount_usd(plan_lineage):
    # amount_usd = round(amount / as-of rate) (USD: amount); the rate comes from silver/rates.rate,
    # chosen by currency (the USD branch condition) and order date (join key only: excluded)
    assert deps(plan_lineage, "silver/orders", "amount_usd") == {
        "bronze/orders.amount",
        "bronze/orders.currency",
        "silver/rates.rate",
    }
    assert deps(plan_lineage, "silver/opportunities", "amount_usd") == {
        "bronze/opportunities.amount",
        "bronze/opportunities.currency",
        "silver/rates.rate",
    }
    assert deps(plan_lineage, "silver/orders", "order_date") == {"bronze/orders.order_ts"}


def test_gold_fact_orders_amount_usd(plan_lineage):
    assert deps(plan_lineage, "gold/fact_orders", "amount_usd") == {"silver/orders.amount_usd"}
    # final_status = coalesce(latest event type, status); the latest event is chosen by a window
    # ordered by event_ts (ordering only: excluded)
    assert deps(plan_lineage, "gold/fact_orders", "final_status") == {
        "silver/order_events.event_type",
        "silver/orders.status",
    }


def test_gold_customer_360_revenue_usd(plan_lineage):
    # revenue_usd = coalesce(sum(amount_usd where is_revenue), 0) grouped by customer_id
    assert deps(plan_lineage, "gold/customer_360", "revenue_usd") == {
        "gold/fact_orders.amount_usd",
        "gold/fact_orders.is_revenue",
    }
    assert deps(plan_lineage, "gold/customer_360", "ltv_tier") == deps(plan_lineage, "gold/customer_360", "revenue_usd")
    # count(*) per customer: the key it counts per
    assert deps(plan_lineage, "gold/customer_360", "total_orders") == {"gold/fact_orders.customer_id"}
    # the WHERE on stage is not a source of the pipeline amount
    assert deps(plan_lineage, "gold/customer_360", "open_pipeline_usd") == {"silver/opportunities.amount_usd"}
    # the CRM match joins on the email hash (join key: excluded); "Unknown" when no account matched
    assert deps(plan_lineage, "gold/customer_360", "industry") == {
        "silver/accounts.account_id",
        "silver/accounts.industry",
    }
    assert deps(plan_lineage, "gold/customer_360", "email_hash") == {"silver/customers.email_hash"}


def test_every_gold_and_silver_column_has_an_upstream_column(plan_lineage):
    for table in GOLD_TABLES:
        assert plan_lineage[f"gold/{table}"], table
        empty = [c for c, d in plan_lineage[f"gold/{table}"].items() if not d]
        assert not empty, f"gold/{table}: no upstream column for {empty}"
    for ds in DATASETS:
        for layer in ("silver", "quarantine"):
            empty = [c for c, d in plan_lineage[f"{layer}/{ds.name}"].items() if not d]
            assert not empty, f"{layer}/{ds.name}: no upstream column for {empty}"
            # silver/quarantine read bronze and silver tables only
            assert {t.split("/")[0] for d in plan_lineage[f"{layer}/{ds.name}"].values() for t, _ in d} <= {
                "bronze",
                "silver",
            }


def test_quarantine_reasons_depend_on_reference_targets(plan_lineage):
    """An orphan check is a left join to the target's keys plus a constant "matched" flag: the
    flag (and so _reasons) depends on the join keys, including the referenced silver column."""
    reasons = deps(plan_lineage, "quarantine/orders", "_reasons")
    assert {"silver/customers.customer_id", "silver/products.product_id", "silver/rates.rate"} <= reasons
    assert {"bronze/orders.amount", "bronze/orders.quantity", "bronze/orders._corrupt_record"} <= reasons
    # raw PII never flows into the reasons (duplicate/version ranking is ordering only)
    assert not any(c.endswith((".email", ".first_name", ".phone")) for c in deps(plan_lineage, "quarantine/customers", "_reasons"))


# -- 2. the walker on synthetic plans --------------------------------------------------------


@pytest.fixture
def mini_lake(spark, tmp_path):
    root = tmp_path / "lake"
    for table, cols in {
        "silver/a": "k string, v decimal(18,2), w long",
        "silver/b": "k string, x long, flag string",
    }.items():
        (root / table).mkdir(parents=True)
        spark.createDataFrame([], cols).write.mode("overwrite").parquet(str(root / table))
    read = {t: spark.read.parquet(str(root / t)) for t in ("silver/a", "silver/b")}
    return root, read


def test_walker_union_aggregate_window_join(mini_lake):
    root, t = mini_lake
    a, b = t["silver/a"], t["silver/b"]
    u = a.select("k", F.col("v").cast("double").alias("y")).unionByName(b.select("k", F.col("x").cast("double").alias("y")))
    w = Window.partitionBy("k").orderBy("w")
    df = (
        a.withColumn("last_w", F.last("w").over(w))
        .withColumn("rn", F.row_number().over(w))
        .join(u.groupBy("k").agg(F.sum("y").alias("total"), F.count(F.lit(1)).alias("n")), "k", "left")
        .join(b.select("k", F.lit(True).alias("matched")), "k", "left")
        .where(F.col("rn") == 1)
        .select("k", "last_w", "total", "n", F.coalesce("matched", F.lit(False)).alias("has_b"), F.lit("x").alias("const"))
    )
    got = {c: {f"{tb}.{col}" for tb, col in d} for c, d in derive_lineage(df, lake_table_resolver(str(root))).items()}
    assert got == {
        "k": {"silver/a.k"},
        "last_w": {"silver/a.w"},  # the window function's argument, not its ordering
        "total": {"silver/a.v", "silver/b.x"},  # both sides of the union
        "n": {"silver/a.k", "silver/b.k"},  # count(*) per k: the grouping key (both union sides)
        "has_b": {"silver/a.k", "silver/b.k"},  # a constant matched flag: the outer join's keys
        "const": set(),
    }


def test_connect_dataframe_degrades_gracefully(caplog):
    class ConnectLike:  # a Spark Connect DataFrame has no _jdf (no JVM plan in this process)
        columns = ["a"]

        @property
        def _jdf(self):
            raise AttributeError("Spark Connect DataFrame has no _jdf")

    with caplog.at_level(logging.INFO):
        assert column_lineage_metadata(ConnectLike(), "/tmp/lake", logging.getLogger("t")) == {}
    assert "column lineage skipped" in caplog.text


# -- 3. a real run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory, spark):
    from etl_assets.definitions import build_definitions

    root = tmp_path_factory.mktemp("lineage_run")
    landing, lake = root / "landing", root / "lake"
    generate(landing, days=2, seed=1, scale=0.01)
    settings = Settings(
        env="local", landing_uri=str(landing), lake_uri=str(lake), pii_salt=TEST_PII.salt, pii_key=TEST_PII.key
    )
    defs = build_definitions(settings)
    result = defs.resolve_job_def("etl_all").execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    mats = {}
    for ev in result.get_asset_materialization_events():
        m = ev.event_specific_data.materialization
        mats["/".join(m.asset_key.path)] = dict(m.metadata)
    return {"result": result, "mats": mats, "keys": set(defs.get_repository_def().asset_graph.get_all_asset_keys())}


def test_every_materialization_has_plan_lineage(run, plan_lineage):
    assert run["result"].success
    tables = [f"{layer}/{ds.name}" for ds in DATASETS for layer in ("silver", "quarantine")]
    tables += [f"gold/{t}" for t in GOLD_TABLES]
    for table in tables:
        meta = run["mats"][table]
        lineage = meta["dagster/column_lineage"]
        lineage = getattr(lineage, "value", lineage)
        assert isinstance(lineage, TableColumnLineage), table
        got = {c: sorted(("/".join(d.asset_key.path), d.column_name) for d in ds) for c, ds in lineage.deps_by_column.items()}
        expected = {c: sorted(d) for c, d in plan_lineage[table].items() if d}
        assert got == expected, table
        for ds in lineage.deps_by_column.values():
            for d in ds:
                assert d.asset_key in run["keys"], (table, d.asset_key)
        md = getattr(meta["column_lineage"], "value", meta["column_lineage"])  # readable in the OSS UI
        assert md.startswith("| column | upstream columns |") and all(f"| `{c}` |" in md for c in expected)


NUMERIC = ("dagster/row_count", "bytes_written", "files_written", "duration_s", "rows_per_s")


def _num(meta, key):
    v = meta[key]
    v = getattr(v, "value", v)
    assert isinstance(v, (int, float)) and not isinstance(v, bool), (key, v)
    return v


def test_metrics_are_numeric(run):
    mats = run["mats"]
    for table, meta in mats.items():
        for key in NUMERIC:
            assert _num(meta, key) >= 0, (table, key)
    for ds in DATASETS:
        s, q = mats[f"silver/{ds.name}"], mats[f"quarantine/{ds.name}"]
        assert 0 <= _num(s, "pass_rate") <= 1 and 0 <= _num(s, "quarantine_rate") <= 1
        assert _num(q, "quarantine_rate") == _num(s, "quarantine_rate")
        for reason in quarantine_reasons(ds):  # every reason is a series, 0 when absent
            assert _num(s, f"quarantined_{reason}") >= 0 and _num(q, f"quarantined_{reason}") >= 0
        for key in ("bronze_rows", "duplicate_row", "quarantined", "superseded", "silver_rows"):
            _num(s, key)
