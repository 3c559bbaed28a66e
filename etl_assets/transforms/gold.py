"""Silver -> the five gold tables, exactly as the contract defines them.

All money is USD and already rounded half-up to 2 decimals per row (silver ``amount_usd``)
before any sum. Plain ``DataFrame -> DataFrame`` functions of Spark native expressions.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from etl_assets.registry import CLOSED_STAGES, ORDER_STATUSES

MONEY = "decimal(18,2)"
NOT_REVENUE = ("CANCELLED", "RETURNED")


def _rank(col):
    """Rank of an order status / event type, 1..6 in contract order."""
    expr = F.lit(0)
    for i, s in reversed(list(enumerate(ORDER_STATUSES, start=1))):
        expr = F.when(col == s, F.lit(i)).otherwise(expr)
    return expr


def fact_orders(orders: DataFrame, order_events: DataFrame) -> DataFrame:
    """One row per silver order with its ``final_status`` and ``is_revenue``."""
    w = Window.partitionBy("order_id").orderBy(F.col("event_ts").desc(), F.col("_rank").desc())
    latest = (
        order_events.select("order_id", "event_type", "event_ts", _rank(F.col("event_type")).alias("_rank"))
        .withColumn("_n", F.row_number().over(w))
        .where("_n = 1")
        .select("order_id", F.col("event_type").alias("_latest_event_type"))
    )
    final_status = F.coalesce(F.col("_latest_event_type"), F.col("status"))
    return (
        orders.join(latest, "order_id", "left")
        .select(
            "order_id",
            "customer_id",
            "product_id",
            "order_date",
            "order_ts",
            "quantity",
            "amount",
            "currency",
            "amount_usd",
            final_status.alias("final_status"),
            (~final_status.isin(*NOT_REVENUE)).alias("is_revenue"),
        )
    )


def crm_match(customers: DataFrame, accounts: DataFrame) -> DataFrame:
    """customer_id -> the matching account (same email hash; greatest last_modified_date -- a
    UTC timestamp, so two changes on the same day are ordered by time -- then smallest
    account_id)."""
    w = Window.partitionBy("customer_id").orderBy(
        F.col("last_modified_date").desc_nulls_last(), F.col("account_id").asc()
    )
    return (
        customers.where(F.col("email_hash").isNotNull())
        .select("customer_id", "email_hash")
        .join(
            accounts.where(F.col("primary_email_hash").isNotNull()).select(
                F.col("primary_email_hash").alias("email_hash"),
                "account_id",
                "industry",
                "annual_revenue",
                "last_modified_date",
            ),
            "email_hash",
        )
        .withColumn("_n", F.row_number().over(w))
        .where("_n = 1")
        .select(
            "customer_id",
            F.col("account_id").alias("crm_account_id"),
            F.col("industry").alias("_crm_industry"),
            "annual_revenue",
        )
    )


def customer_360(
    customers: DataFrame,
    fact: DataFrame,
    behavior: DataFrame,
    accounts: DataFrame,
    opportunities: DataFrame,
) -> DataFrame:
    orders = fact.groupBy("customer_id").agg(
        F.count(F.lit(1)).alias("total_orders"),
        F.sum(F.when(F.col("is_revenue"), F.col("amount_usd"))).alias("_revenue"),
        F.min("order_date").alias("first_order_date"),
        F.max("order_date").alias("last_order_date"),
    )
    events = (
        behavior.where(F.col("customer_id").isNotNull())
        .groupBy("customer_id")
        .agg(
            F.count(F.lit(1)).alias("total_events"),
            F.countDistinct("session_id").alias("total_sessions"),
            F.max("event_ts").alias("last_activity_ts"),
        )
    )
    pipeline = (
        opportunities.where(~F.col("stage").isin(*CLOSED_STAGES))
        .groupBy("account_id")
        .agg(F.sum("amount_usd").alias("_pipeline"))
        .withColumnRenamed("account_id", "crm_account_id")
    )
    revenue = F.coalesce(F.col("_revenue"), F.lit(0)).cast(MONEY)
    return (
        customers.select("customer_id", "email_hash", "country", "segment", "signup_date")
        .join(orders, "customer_id", "left")
        .join(events, "customer_id", "left")
        .join(crm_match(customers, accounts), "customer_id", "left")
        .join(pipeline, "crm_account_id", "left")
        .select(
            "customer_id",
            "email_hash",
            "country",
            "segment",
            "signup_date",
            F.coalesce("total_orders", F.lit(0)).cast("long").alias("total_orders"),
            revenue.alias("revenue_usd"),
            "first_order_date",
            "last_order_date",
            F.coalesce("total_events", F.lit(0)).cast("long").alias("total_events"),
            F.coalesce("total_sessions", F.lit(0)).cast("long").alias("total_sessions"),
            "last_activity_ts",
            "crm_account_id",
            F.when(F.col("crm_account_id").isNull(), F.lit("Unknown"))
            .otherwise(F.col("_crm_industry"))
            .alias("industry"),
            "annual_revenue",
            F.coalesce(F.col("_pipeline"), F.lit(0)).cast(MONEY).alias("open_pipeline_usd"),
            F.when(revenue >= 10000, "platinum")
            .when(revenue >= 1000, "gold")
            .when(revenue > 0, "silver")
            .otherwise("none")
            .alias("ltv_tier"),
        )
    )


def product_performance_daily(fact: DataFrame, products: DataFrame) -> DataFrame:
    daily = fact.groupBy("order_date", "product_id").agg(
        F.count(F.lit(1)).alias("orders"),
        F.sum("quantity").cast("long").alias("units"),
        F.coalesce(F.sum(F.when(F.col("is_revenue"), F.col("amount_usd"))), F.lit(0)).cast(MONEY).alias("revenue_usd"),
        F.coalesce(F.sum(F.when(F.col("final_status") == "RETURNED", F.col("quantity"))), F.lit(0))
        .cast("long")
        .alias("returned_units"),
    )
    ratio = F.col("returned_units").cast("decimal(20,0)") / F.col("units").cast("decimal(20,0)")
    return daily.join(F.broadcast(products.select("product_id", "category")), "product_id", "left").select(
        "order_date",
        "product_id",
        "category",
        "orders",
        "units",
        "revenue_usd",
        "returned_units",
        F.round(ratio, 4).cast("decimal(10,4)").alias("return_rate"),
    )


def _revenue_orders(fact: DataFrame) -> DataFrame:
    return fact.where(F.col("is_revenue")).withColumn("month", F.trunc("order_date", "month"))


def revenue_by_geography(fact: DataFrame, customers: DataFrame) -> DataFrame:
    return (
        _revenue_orders(fact)
        .join(customers.select("customer_id", "country"), "customer_id", "left")
        .groupBy("month", "country")
        .agg(
            F.count(F.lit(1)).alias("orders"),
            F.countDistinct("customer_id").alias("customers"),
            F.sum("amount_usd").cast(MONEY).alias("revenue_usd"),
        )
        .select("month", "country", "orders", "customers", "revenue_usd")
    )


def revenue_by_industry(fact: DataFrame, c360: DataFrame) -> DataFrame:
    return (
        _revenue_orders(fact)
        .join(c360.select("customer_id", "industry"), "customer_id", "left")
        .groupBy("month", "industry")
        .agg(F.count(F.lit(1)).alias("orders"), F.sum("amount_usd").cast(MONEY).alias("revenue_usd"))
        .select("month", "industry", "orders", "revenue_usd")
    )
