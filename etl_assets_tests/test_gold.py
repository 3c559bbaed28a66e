"""Gold: final_status ties, CRM-match ties, sums and half-up rounding, on hand-made silver frames."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from etl_assets.transforms import gold as G

D = dt.date
TS = dt.datetime


@pytest.fixture(scope="module")
def silver(spark):
    orders = spark.createDataFrame(
        [
            ("o1", "c1", "p1", D(2026, 10, 5), TS(2026, 10, 5, 9), 2, Decimal("20.00"), "EUR", Decimal("10.00"), "PLACED"),
            ("o2", "c1", "p2", D(2026, 10, 5), TS(2026, 10, 5, 10), 1, Decimal("5.00"), "USD", Decimal("5.00"), "PAID"),
            ("o3", "c2", "p1", D(2026, 11, 1), TS(2026, 11, 1, 8), 3, Decimal("9000.00"), "USD", Decimal("9000.00"), "PAID"),
            ("o4", "c2", "p1", D(2026, 11, 1), TS(2026, 11, 1, 9), 3, Decimal("1000.00"), "USD", Decimal("1000.00"), "DELIVERED"),
            ("o5", "c3", "p1", D(2026, 10, 5), TS(2026, 10, 5, 11), 1, Decimal("1.00"), "USD", Decimal("1.00"), "PAID"),
        ],
        "order_id string, customer_id string, product_id string, order_date date, order_ts timestamp, "
        "quantity int, amount decimal(18,2), currency string, amount_usd decimal(18,2), status string",
    )
    events = spark.createDataFrame(
        [
            # o1: two events at the same latest time -> the higher rank (RETURNED=6 > DELIVERED=4)
            ("e1", "o1", "SHIPPED", TS(2026, 10, 6)),
            ("e2", "o1", "DELIVERED", TS(2026, 10, 7)),
            ("e3", "o1", "RETURNED", TS(2026, 10, 7)),
            # o2: the latest by time wins even with a lower rank
            ("e4", "o2", "CANCELLED", TS(2026, 10, 6)),
            ("e5", "o2", "PAID", TS(2026, 10, 8)),
            # o5: cancelled
            ("e6", "o5", "CANCELLED", TS(2026, 10, 6)),
        ],
        "event_id string, order_id string, event_type string, event_ts timestamp",
    )
    customers = spark.createDataFrame(
        [
            ("c1", "h1", "DE", "smb", D(2025, 1, 1)),
            ("c2", "h2", "US", "enterprise", D(2025, 1, 2)),
            ("c3", None, "DE", "smb", D(2025, 1, 3)),
            ("c4", "h4", "FR", "smb", D(2025, 1, 4)),
        ],
        "customer_id string, email_hash string, country string, segment string, signup_date date",
    )
    behavior = spark.createDataFrame(
        [
            ("b1", "c1", "s1", TS(2026, 10, 1)),
            ("b2", "c1", "s1", TS(2026, 10, 3)),
            ("b3", "c1", None, TS(2026, 10, 2)),
            ("b4", None, "s9", TS(2026, 10, 9)),
        ],
        "event_id string, customer_id string, session_id string, event_ts timestamp",
    )
    accounts = spark.createDataFrame(
        [
            # h1 matches a1 and a2 with the same last_modified_date -> smallest account_id (a1)
            ("a2", "h1", "Retail", Decimal("5.00"), TS(2026, 9, 1, 8)),
            ("a1", "h1", "Finance", Decimal("7.00"), TS(2026, 9, 1, 8)),
            # h2 matches a3 (older) and a4 (newer) -> a4
            ("a3", "h2", "Energy", Decimal("1.00"), TS(2026, 1, 1, 8)),
            ("a4", "h2", "Media", Decimal("2.00"), TS(2026, 2, 1, 8)),
        ],
        "account_id string, primary_email_hash string, industry string, annual_revenue decimal(18,2), last_modified_date timestamp",
    )
    opportunities = spark.createDataFrame(
        [
            ("op1", "a1", "Proposal", Decimal("100.10")),
            ("op2", "a1", "Closed Won", Decimal("999.00")),
            ("op3", "a1", "Negotiation", Decimal("0.05")),
            ("op4", "a3", "Proposal", Decimal("50.00")),
        ],
        "opportunity_id string, account_id string, stage string, amount_usd decimal(18,2)",
    )
    products = spark.createDataFrame(
        [("p1", "books"), ("p2", "games")], "product_id string, category string"
    )
    fact = G.fact_orders(orders, events).cache()
    c360 = G.customer_360(customers, fact, behavior, accounts, opportunities).cache()
    return dict(fact=fact, c360=c360, customers=customers, products=products)


def test_fact_orders_final_status_ties_and_is_revenue(silver):
    f = {r["order_id"]: r for r in silver["fact"].collect()}
    assert f["o1"]["final_status"] == "RETURNED" and f["o1"]["is_revenue"] is False
    assert f["o2"]["final_status"] == "PAID" and f["o2"]["is_revenue"] is True
    assert f["o3"]["final_status"] == "PAID"  # no events: the order's own status
    assert f["o5"]["is_revenue"] is False
    assert silver["fact"].columns == [
        "order_id", "customer_id", "product_id", "order_date", "order_ts", "quantity", "amount",
        "currency", "amount_usd", "final_status", "is_revenue",
    ]


def test_customer_360(silver):
    c = {r["customer_id"]: r for r in silver["c360"].collect()}
    c1, c2, c3, c4 = c["c1"], c["c2"], c["c3"], c["c4"]
    assert (c1["total_orders"], c1["revenue_usd"]) == (2, Decimal("5.00"))  # o1 returned
    assert (c1["first_order_date"], c1["last_order_date"]) == (D(2026, 10, 5), D(2026, 10, 5))
    assert (c1["total_events"], c1["total_sessions"], c1["last_activity_ts"]) == (3, 1, TS(2026, 10, 3))
    assert (c1["crm_account_id"], c1["industry"], c1["annual_revenue"]) == ("a1", "Finance", Decimal("7.00"))
    assert c1["open_pipeline_usd"] == Decimal("100.15")
    assert c1["ltv_tier"] == "silver"
    assert (c2["crm_account_id"], c2["industry"], c2["revenue_usd"], c2["ltv_tier"]) == ("a4", "Media", Decimal("10000.00"), "platinum")
    assert c2["open_pipeline_usd"] == Decimal("0.00")  # a4 has no opportunities
    assert (c3["crm_account_id"], c3["industry"], c3["revenue_usd"], c3["ltv_tier"]) == (None, "Unknown", Decimal("0.00"), "none")
    assert (c4["total_orders"], c4["total_events"], c4["last_activity_ts"], c4["first_order_date"]) == (0, 0, None, None)
    assert silver["c360"].columns == [
        "customer_id", "email_hash", "country", "segment", "signup_date", "total_orders", "revenue_usd",
        "first_order_date", "last_order_date", "total_events", "total_sessions", "last_activity_ts",
        "crm_account_id", "industry", "annual_revenue", "open_pipeline_usd", "ltv_tier",
    ]


def test_crm_match_orders_same_day_changes_by_time(spark):
    """``last_modified_date`` is a timestamp: of two accounts changed on the same day, the one
    changed later wins, although its account_id is greater (a date-only order would tie and
    fall back to the smallest account_id)."""
    customers = spark.createDataFrame(
        [("c1", "h1", "DE", "smb", D(2025, 1, 1)), ("c2", "h2", "DE", "smb", D(2025, 1, 1))],
        "customer_id string, email_hash string, country string, segment string, signup_date date",
    )
    accounts = spark.createDataFrame(
        [
            ("a1", "h1", "Finance", Decimal("1.00"), TS(2026, 3, 28, 8, 0, 0)),
            ("a2", "h1", "Retail", Decimal("2.00"), TS(2026, 3, 28, 17, 30, 0)),
            # one microsecond later is later
            ("b1", "h2", "Energy", Decimal("3.00"), TS(2026, 3, 28, 9, 0, 0)),
            ("b2", "h2", "Media", Decimal("4.00"), TS(2026, 3, 28, 9, 0, 0, 1)),
        ],
        "account_id string, primary_email_hash string, industry string, annual_revenue decimal(18,2), last_modified_date timestamp",
    )
    fact = spark.createDataFrame([], "customer_id string, order_date date, amount_usd decimal(18,2), is_revenue boolean")
    empty_b = spark.createDataFrame([], "customer_id string, session_id string, event_ts timestamp")
    empty_o = spark.createDataFrame([], "account_id string, stage string, amount_usd decimal(18,2)")
    got = {r["customer_id"]: (r["crm_account_id"], r["industry"], r["annual_revenue"])
           for r in G.customer_360(customers, fact, empty_b, accounts, empty_o).collect()}
    assert got == {"c1": ("a2", "Retail", Decimal("2.00")), "c2": ("b2", "Media", Decimal("4.00"))}


def test_ltv_tier_boundaries(spark):
    fact = spark.createDataFrame(
        [(c, D(2026, 1, 1), Decimal(v), True) for c, v in [("x1", "999.99"), ("x2", "1000.00"), ("x3", "9999.99"), ("x4", "0.01")]],
        "customer_id string, order_date date, amount_usd decimal(18,2), is_revenue boolean",
    )
    customers = spark.createDataFrame(
        [(c, None, None, None, None) for c in ("x1", "x2", "x3", "x4")],
        "customer_id string, email_hash string, country string, segment string, signup_date date",
    )
    empty_b = spark.createDataFrame([], "customer_id string, session_id string, event_ts timestamp")
    empty_a = spark.createDataFrame([], "account_id string, primary_email_hash string, industry string, annual_revenue decimal(18,2), last_modified_date timestamp")
    empty_o = spark.createDataFrame([], "account_id string, stage string, amount_usd decimal(18,2)")
    tiers = {r["customer_id"]: r["ltv_tier"] for r in G.customer_360(customers, fact, empty_b, empty_a, empty_o).collect()}
    assert tiers == {"x1": "silver", "x2": "gold", "x3": "gold", "x4": "silver"}


def test_product_performance_daily_return_rate_half_up(spark):
    fact = spark.createDataFrame(
        [
            ("o1", "p1", D(2026, 1, 1), 1, Decimal("1.00"), "RETURNED", False),
            ("o2", "p1", D(2026, 1, 1), 7, Decimal("2.50"), "PAID", True),
            ("o3", "p1", D(2026, 1, 1), 8, Decimal("0.50"), "DELIVERED", True),
            ("o4", "p2", D(2026, 1, 2), 3, Decimal("9.99"), "CANCELLED", False),
        ],
        "order_id string, product_id string, order_date date, quantity int, amount_usd decimal(18,2), final_status string, is_revenue boolean",
    )
    products = spark.createDataFrame([("p1", "books"), ("p2", "games")], "product_id string, category string")
    rows = {(r["order_date"], r["product_id"]): r for r in G.product_performance_daily(fact, products).collect()}
    r = rows[(D(2026, 1, 1), "p1")]
    assert (r["category"], r["orders"], r["units"], r["revenue_usd"], r["returned_units"]) == ("books", 3, 16, Decimal("3.00"), 1)
    assert r["return_rate"] == Decimal("0.0625")  # 1/16 exactly
    r2 = rows[(D(2026, 1, 2), "p2")]
    assert (r2["revenue_usd"], r2["return_rate"]) == (Decimal("0.00"), Decimal("0.0000"))
    # half-up at the 5th decimal: 1/32 = 0.03125 -> 0.0313
    fact2 = spark.createDataFrame(
        [("o", "p1", D(2026, 1, 3), 1, Decimal("1"), "RETURNED", False), ("o", "p1", D(2026, 1, 3), 31, Decimal("1"), "PAID", True)],
        fact.schema,
    )
    assert G.product_performance_daily(fact2, products).collect()[0]["return_rate"] == Decimal("0.0313")


def test_revenue_by_geography_and_industry(silver):
    geo = {(r["month"], r["country"]): r for r in G.revenue_by_geography(silver["fact"], silver["customers"]).collect()}
    assert set(geo) == {(D(2026, 10, 1), "DE"), (D(2026, 11, 1), "US")}
    de = geo[(D(2026, 10, 1), "DE")]
    assert (de["orders"], de["customers"], de["revenue_usd"]) == (1, 1, Decimal("5.00"))  # o2 only
    us = geo[(D(2026, 11, 1), "US")]
    assert (us["orders"], us["customers"], us["revenue_usd"]) == (2, 1, Decimal("10000.00"))
    ind = {(r["month"], r["industry"]): r for r in G.revenue_by_industry(silver["fact"], silver["c360"]).collect()}
    assert {k: (v["orders"], v["revenue_usd"]) for k, v in ind.items()} == {
        (D(2026, 10, 1), "Finance"): (1, Decimal("5.00")),
        (D(2026, 11, 1), "Media"): (2, Decimal("10000.00")),
    }
