"""The five gold tables as assets."""


import time

from dagster import AssetExecutionContext, MaterializeResult, asset

from etl_assets.assets.factory import publish_metadata, table_key
from etl_assets.resources import PlatformResource, SparkResource
from etl_assets.transforms import gold as T

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


def gold_asset(name: str):
    deps = [table_key(layer, t) for layer, t in GOLD_DEPS[name]]

    @asset(
        key=table_key("gold", name),
        deps=deps,
        group_name="gold",
        kinds={"spark", "parquet"},
        owners=[OWNER],
        tags={"layer": "gold", "pii": "yes" if name == "customer_360" else "no"},
        description=DESCRIPTIONS[name],
    )
    def _gold(context: AssetExecutionContext, spark: SparkResource, platform: PlatformResource):
        started = time.monotonic()
        session = spark.get_session()
        inputs = {f"{layer}/{t}": platform.lake.read(session, layer, t) for layer, t in GOLD_DEPS[name]}
        df = BUILDERS[name](inputs)
        stats = platform.lake.publish(df, "gold", name)
        rows = platform.lake.read(session, "gold", name).count()
        return MaterializeResult(metadata=publish_metadata(platform.lake, "gold", name, stats, rows, started))

    return _gold


GOLD_ASSETS = [gold_asset(n) for n in GOLD_DEPS]
