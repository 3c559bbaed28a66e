"""The five gold tables as assets."""


import time

from datetime import datetime, timedelta, timezone

from dagster import AssetExecutionContext, AutomationCondition, FreshnessPolicy, MaterializeResult, asset
from pyspark import StorageLevel
from pyspark.sql import functions as F

from etl_assets import audit, checks
from etl_assets.assets.factory import RETRY_POLICY, gate, publish_metadata, step_guard, table_key, writer_pool
from etl_assets.checks import PublishCheck
from etl_assets.lake import Write
from etl_assets.registry import DATASETS
from etl_assets.schemas import column_schema, spark_schema
from etl_assets.resources import PlatformResource, SparkResource
from etl_assets.transforms import gold as T
from etl_assets.lineage import column_lineage_metadata
from etl_assets.docs import source_system_tag

OWNER = "team:analytics-engineering"

GOLD_DEPS = {
    "fact_orders": [("silver", "orders"), ("silver", "order_events")],
    "customer_360": [
        ("silver", "customers"),
        ("gold", "fact_orders"),
        ("silver", "behavior"),
        ("silver", "accounts"),
        ("silver", "opportunities"),
    ],
    "product_performance_daily": [("gold", "fact_orders"), ("silver", "products")],
    "revenue_by_geography": [("gold", "fact_orders"), ("silver", "customers")],
    "revenue_by_industry": [("gold", "fact_orders"), ("gold", "customer_360")],
}

DESCRIPTIONS = {
    "fact_orders": "One row per silver order, in USD, with final_status from the latest order "
    "event (ties to the higher status rank) and is_revenue.",
    "customer_360": "One row per silver customer: orders, revenue, web activity, CRM account match "
    "and open pipeline, LTV tier.",
    "product_performance_daily": "Orders, units, revenue and returns per order date and product.",
    "revenue_by_geography": "Revenue orders per month and customer country.",
    "revenue_by_industry": "Revenue orders per month and CRM industry (from customer_360).",
}

BUILDERS = {
    "fact_orders": lambda t: T.fact_orders(t["silver/orders"], t["silver/order_events"]),
    "customer_360": lambda t: T.customer_360(
        t["silver/customers"],
        t["gold/fact_orders"],
        t["silver/behavior"],
        t["silver/accounts"],
        t["silver/opportunities"],
    ),
    "product_performance_daily": lambda t: T.product_performance_daily(t["gold/fact_orders"], t["silver/products"]),
    "revenue_by_geography": lambda t: T.revenue_by_geography(t["gold/fact_orders"], t["silver/customers"]),
    "revenue_by_industry": lambda t: T.revenue_by_industry(t["gold/fact_orders"], t["gold/customer_360"]),
}


# Gold must be updated within 1 hour: the UI shows the freshness state of every gold table.
GOLD_FRESHNESS = FreshnessPolicy.time_window(fail_window=timedelta(hours=1))

# Referential integrity: (child columns, parent table, parent columns)
REFERENCES = {
    "fact_orders": [
        (("customer_id",), ("silver", "customers"), ("customer_id",)),
        (("product_id",), ("silver", "products"), ("product_id",)),
    ],
    "customer_360": [(("crm_account_id",), ("silver", "accounts"), ("account_id",))],
    "product_performance_daily": [(("order_date", "product_id"), ("gold", "fact_orders"), ("order_date", "product_id"))],
    "revenue_by_geography": [(("country",), ("silver", "customers"), ("country",))],
    "revenue_by_industry": [(("industry",), ("gold", "customer_360"), ("industry",))],
}


def gold_check_specs(name: str) -> list:
    key = table_key("gold", name)
    out = [
        checks.spec(key, checks.SCHEMA, "Pandera model: columns, types, nullability, constraints", blocking=True),
        checks.spec(key, checks.PRIMARY_KEY, "One row per primary key", blocking=True),
        checks.spec(key, checks.VOLUME, "Row count near the median of recent materializations (WARN)"),
    ]
    if REFERENCES.get(name):
        parents = ", ".join(f"{layer}/{t}" for _, (layer, t), _ in REFERENCES[name])
        out.append(checks.spec(key, checks.REFERENTIAL, f"Every reference resolves in {parents}", blocking=True))
    return out


def gold_asset(name: str):
    deps = [table_key(layer, t) for layer, t in GOLD_DEPS[name]]

    @asset(
        key=table_key("gold", name),
        deps=deps,
        group_name="gold",
        kinds={"spark", "delta"},
        owners=[OWNER],
        tags={"layer": "gold", "pii": "yes" if name == "customer_360" else "no",
              "source_system": source_system_tag(GOLD_DEPS[name], GOLD_DEPS)},
        description=DESCRIPTIONS[name],
        automation_condition=AutomationCondition.eager(),  # follows new silver data
        freshness_policy=GOLD_FRESHNESS,
        check_specs=gold_check_specs(name),
        retry_policy=RETRY_POLICY,
        pool=writer_pool("gold", name),
    )
    def _gold(context: AssetExecutionContext, spark: SparkResource, platform: PlatformResource):
        reads = sorted(set(GOLD_DEPS[name]) | {(layer, p) for _, (layer, p), _ in REFERENCES.get(name, [])})
        with step_guard(context, platform, writes=[("gold", name)], reads=reads):
            yield from _gold_step(context, spark, platform)

    def _gold_step(context, spark: SparkResource, platform: PlatformResource):
        started, started_at = time.monotonic(), audit.utcnow()
        session = spark.get_session()
        key = table_key("gold", name)
        inputs = {f"{layer}/{t}": platform.lake.read(session, layer, t) for layer, t in GOLD_DEPS[name]}
        df = BUILDERS[name](inputs).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            check = PublishCheck(df, f"gold/{name}")
            # quality gate: the frame is staged (computing the Pandera checks as it is written) and
            # validated before it is swapped in
            with platform.lake.transaction([Write(check.df, "gold", name)], context.run_id) as staged:
                checks_started = time.monotonic()
                outcomes = check.outcomes(staged.paths[0])
                refs = []
                for child_cols, (layer, parent), parent_cols in REFERENCES.get(name, []):
                    label = f"{name}.{', '.join(child_cols)} -> {layer}/{parent}"
                    parent_df = platform.lake.read(session, layer, parent).select(
                        *[F.col(p).alias(c) for p, c in zip(parent_cols, child_cols)]
                    )
                    refs.append(checks.referential_outcome(df, parent_df, list(child_cols), label))
                if refs:
                    outcomes.append(checks.combine(checks.REFERENTIAL, refs))
                rows = sum(o.metadata.get("rows_checked", 0) for o in outcomes if o.name == checks.SCHEMA)
                outcomes.append(checks.volume_outcome(rows, checks.row_count_history(context.instance, key)))
                checks_s = time.monotonic() - checks_started
                yield from gate([(key, outcomes)])  # raises: nothing is published
        finally:
            df.unpersist()
        stats = staged.stats[0]
        audit.record(context, platform.lake, "gold", name, rows, started_at)  # gold/audit_log
        meta_started = time.monotonic()
        meta = publish_metadata(platform.lake, "gold", name, stats, rows, started)
        meta["checks_duration_s"] = round(checks_s, 3)
        meta["dagster/column_schema"] = column_schema(f"gold/{name}")
        meta.update(column_lineage_metadata(df, platform.lake_uri, context.log))  # from the Spark plan
        meta["metadata_duration_s"] = round(time.monotonic() - meta_started, 3)
        yield MaterializeResult(metadata=meta, check_results=[o.to_result(key) for o in outcomes])

    return _gold


GOLD_ASSETS = [gold_asset(n) for n in GOLD_DEPS]


@asset(
    key=table_key("gold", "dq_scorecard"),
    deps=[table_key("silver", ds.name) for ds in DATASETS],
    group_name="gold",
    kinds={"spark", "delta"},
    owners=[OWNER],
    tags={"layer": "gold", "pii": "no", "source_system": source_system_tag([("silver", d.name) for d in DATASETS], GOLD_DEPS)},
    description="Data quality per dataset and run, appended on each run (for BI dashboards): "
    "bronze, silver, quarantined, duplicate and superseded rows, pass rate.",
    automation_condition=AutomationCondition.eager(),
    check_specs=gold_check_specs("dq_scorecard"),
    retry_policy=RETRY_POLICY,
    pool=writer_pool("gold", "dq_scorecard"),
)
def dq_scorecard(context: AssetExecutionContext, spark: SparkResource, platform: PlatformResource):
    """Reads the counts of each silver table's latest materialization from the event log."""
    with step_guard(context, platform, writes=[("gold", "dq_scorecard")]):
        yield from _dq_scorecard_step(context, spark, platform)


def _dq_scorecard_step(context, spark: SparkResource, platform: PlatformResource):
    started, started_at = time.monotonic(), audit.utcnow()
    session = spark.get_session()
    key = table_key("gold", "dq_scorecard")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = []
    for ds in DATASETS:
        records = context.instance.fetch_materializations(table_key("silver", ds.name), limit=1).records
        if not records:
            continue
        m = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
        rows.append(
            (context.run_id, ds.name, int(m["bronze_rows"]), int(m["silver_rows"]), int(m["quarantined"]),
             int(m["duplicate_row"]), int(m["superseded"]), float(m["pass_rate"]), now)
        )
    new = session.createDataFrame(rows, spark_schema("gold/dq_scorecard"))
    if platform.lake.exists("gold", "dq_scorecard"):
        previous = platform.lake.read(session, "gold", "dq_scorecard").where(F.col("run_id") != context.run_id)
        df = previous.unionByName(new)
    else:
        df = new
    check = PublishCheck(df, "gold/dq_scorecard")
    with platform.lake.transaction([Write(check.df, "gold", "dq_scorecard")], context.run_id) as staged:
        checks_started = time.monotonic()
        outcomes = check.outcomes(staged.paths[0])
        total = outcomes[0].metadata["rows_checked"]
        outcomes.append(checks.volume_outcome(total, checks.row_count_history(context.instance, key)))
        checks_s = time.monotonic() - checks_started
        yield from gate([(key, outcomes)])  # raises: nothing is published
    stats = staged.stats[0]
    audit.record(context, platform.lake, "gold", "dq_scorecard", total, started_at)  # gold/audit_log
    meta = publish_metadata(platform.lake, "gold", "dq_scorecard", stats, total, started)
    meta["rows_appended"] = len(rows)
    meta["checks_duration_s"] = round(checks_s, 3)
    meta["dagster/column_schema"] = column_schema("gold/dq_scorecard")
    yield MaterializeResult(metadata=meta, check_results=[o.to_result(key) for o in outcomes])


GOLD_ASSETS.append(dq_scorecard)
