"""Column lineage derived from Spark plans (etl_assets/lineage.py).

1. Hand-checked expectations on the plans the assets build, from empty inputs (no Spark job):
   the rule is "columns whose values flow into the column"; filter-, join- and grouping-only
   columns are excluded, a count(*) depends on the keys it counts per.
2. The walker on small synthetic plans (union, aggregate, window, outer-join flag, Connect).
3. The session's shared ``etl_all`` run: every silver, quarantine and gold materialization carries
   ``dagster/column_lineage`` for every published column, pointing at real asset keys and existing
   columns, exact for the hand-checked columns; and numeric metrics (rows, bytes, duration, rows/s, per-reason counts, pass and quarantine rates).
"""

from __future__ import annotations

import logging

import pytest
from dagster import AssetKey, TableColumnLineage
from pyspark.sql import Window
from pyspark.sql import functions as F

from etl_assets.docs import derived_lineage, quarantine_reasons
from etl_assets.lineage import column_lineage_metadata, derive_lineage, lake_table_resolver
from etl_assets.registry import DATASETS, GOLD_TABLES


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
def run(lake_run):
    from etl_assets.definitions import build_definitions

    defs = build_definitions(lake_run["settings"])
    return {"result": lake_run["result"], "mats": lake_run["mats"], "lake": lake_run["lake"],
            "keys": set(defs.get_repository_def().asset_graph.get_all_asset_keys())}


#: hand-checked lineage of a few columns (the same rule as section 1), expected on the run's metadata
HAND = {
    ("silver/orders", "amount_usd"): {"bronze/orders.amount", "bronze/orders.currency", "silver/rates.rate"},
    ("silver/orders", "order_date"): {"bronze/orders.order_ts"},
    ("gold/fact_orders", "amount_usd"): {"silver/orders.amount_usd"},
    ("gold/fact_orders", "final_status"): {"silver/order_events.event_type", "silver/orders.status"},
    ("gold/customer_360", "revenue_usd"): {"gold/fact_orders.amount_usd", "gold/fact_orders.is_revenue"},
    ("gold/customer_360", "open_pipeline_usd"): {"silver/opportunities.amount_usd"},
    ("gold/customer_360", "email_hash"): {"silver/customers.email_hash"},
}


def test_every_materialization_has_plan_lineage(run):
    """On the run's materializations: every published column (read from the table itself) has
    lineage to real asset keys and existing columns; the hand-checked columns are exact."""
    from deltalake import DeltaTable

    assert run["result"].success
    tables = [f"{layer}/{ds.name}" for ds in DATASETS for layer in ("silver", "quarantine")]
    tables += [f"gold/{t}" for t in GOLD_TABLES]
    columns_of = {}
    for table in tables:
        columns_of[table] = set(DeltaTable(str(run["lake"] / table)).to_pyarrow_dataset().schema.names)
    for ds in DATASETS:
        columns_of[f"bronze/{ds.name}"] = set(
            DeltaTable(str(run["lake"] / "bronze" / ds.name)).to_pyarrow_dataset().schema.names)
    for table in tables:
        lineage = run["mats"][table]["dagster/column_lineage"]
        assert isinstance(lineage, TableColumnLineage), table
        got = {c: {f"{'/'.join(d.asset_key.path)}.{d.column_name}" for d in ds}
               for c, ds in lineage.deps_by_column.items()}
        published = {c for c in columns_of[table] if c not in ("_ingested_at", "_run_id")}
        assert published - set(got) <= {"_source_file", "_dt"}, (table, published - set(got))
        for col, deps_ in got.items():
            assert deps_, (table, col)
            for dep in deps_:
                up, up_col = dep.rsplit(".", 1)
                assert AssetKey(up.split("/")) in run["keys"], (table, dep)
                assert up_col in columns_of[up], (table, col, dep)
        for (t, c), expected in HAND.items():
            if t == table:
                assert got[c] == expected, (table, c, got[c])
        md = run["mats"][table]["column_lineage"]  # readable in the OSS UI
        assert md.startswith("| column | upstream columns |") and all(f"| `{c}` |" in md for c in got)


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
