"""Silver: every row rule and reason, duplicates, versioning ties, references, FX, PII."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

from pyspark.sql import functions as F

from etl_assets.registry import dataset
from etl_assets.transforms.silver import classify
from etl_assets_tests.helpers import bronze, classified, rows_by

TS = "2026-11-01T10:00:00Z"


def fx_silver(spark, rows):
    """Silver fx rates from (rate_date, quote_ccy, rate) triples."""
    ds = dataset("rates")
    b = bronze(
        spark,
        "rates",
        [
            {"rate_date": d, "base_ccy": "USD", "quote_ccy": q, "rate": r, "as_of_ts": TS}
            for d, q, r in rows
        ],
    )
    return classify(b, ds).where("_outcome = 'silver'").select(
        F.col("__p_rate_date").alias("rate_date"),
        F.col("__p_quote_ccy").alias("quote_ccy"),
        F.col("__p_rate").alias("rate"),
    )


def run(spark, pii, name, rows, targets=None, fx=None, known=None):
    """Classify hand-made bronze rows (``helpers.classified``)."""
    return classified(spark, pii, name, rows, targets, fx, known)


def customer(i, **kw):
    base = {"customer_id": i, "email": f"{i}@x.com", "country": "DE", "last_modified_ts": TS}
    base.update(kw)
    return base


# -- step 1: exact duplicates ----------------------------------------------------------------


def test_exact_duplicates_kept_once_and_counted(spark, pii):
    rows = [customer("c1"), customer("c1", _dt="2026-11-02", _source_file="/l/redelivered.csv"), customer("c2")]
    _, silver, _, counts = run(spark, pii, "customers", rows)
    assert counts.duplicate_row == 1
    assert counts.silver_rows == 2
    kept = rows_by(silver, "customer_id")["c1"]
    assert kept["_dt"] == "2026-11-01"  # the earliest delivery is the copy kept
    assert counts.conserved


# -- step 2: row rules ----------------------------------------------------------------------


def test_missing_and_invalid_reasons_are_sorted_and_complete(spark, pii):
    rows = [
        {"order_id": "o1"},  # nearly everything missing
        {
            "order_id": "o2",
            "customer_id": "c1",
            "product_id": "p1",
            "order_ts": "31/12/2026",
            "quantity": "0",
            "amount": "-5.00",
            "currency": "xyz",
            "status": "lost",
            "last_modified_ts": "not-a-date",
        },
    ]
    _, _, q, counts = run(spark, pii, "orders", rows, known=["EUR"])
    reasons = {r["order_id"]: r["_reasons"] for r in q.collect()}
    assert reasons["o1"] == sorted(
        [
            "missing_amount",
            "missing_currency",
            "missing_customer_id",
            "missing_last_modified_ts",
            "missing_order_ts",
            "missing_product_id",
            "missing_quantity",
            "missing_status",
        ]
    )
    assert reasons["o2"] == [
        "invalid_amount",
        "invalid_currency",
        "invalid_last_modified_ts",
        "invalid_order_ts",
        "invalid_quantity",
        "invalid_status",
    ]
    assert counts.quarantined == 2 and counts.reasons["missing_amount"] == 1


def test_malformed_record_gets_only_that_reason_and_keeps_raw_text(spark, pii):
    rows = [{"contact_id": "x", "_corrupt_record": 'x,"broken'}]
    _, _, q, counts = run(spark, pii, "contacts", rows, targets={"accounts": spark.createDataFrame([("a1",)], "account_id string")})
    r = q.collect()[0]
    assert r["_reasons"] == ["malformed_record"]
    # contacts has PII columns: the raw line is kept, but only encrypted
    assert "_corrupt_record" not in q.columns
    assert q.select(pii.decrypt(F.col("_corrupt_record_enc"))).collect()[0][0] == 'x,"broken'
    assert counts.reasons == {"malformed_record": 1}


def test_malformed_record_of_a_dataset_without_pii_stays_readable(spark, pii):
    rows = [{"product_id": "p1", "_corrupt_record": 'p1,"broken'}]
    _, _, q, _ = run(spark, pii, "products", rows)
    assert "_corrupt_record_enc" not in q.columns
    assert q.collect()[0]["_corrupt_record"] == 'p1,"broken'


def test_future_orders_from_dt_plus_two_days(spark, pii):
    base = {
        "customer_id": "c1",
        "product_id": "p1",
        "quantity": "1",
        "amount": "1.00",
        "currency": "USD",
        "status": "PLACED",
        "last_modified_ts": TS,
    }
    rows = [
        {**base, "order_id": "ok", "order_ts": "2026-11-02T23:59:59Z", "_dt": "2026-11-01"},
        {**base, "order_id": "edge", "order_ts": "2026-11-03T00:00:00Z", "_dt": "2026-11-01"},
        {**base, "order_id": "offset", "order_ts": "2026-11-03T01:00:00+02:00", "_dt": "2026-11-01"},
    ]
    targets = {
        "customers": spark.createDataFrame([("c1",)], "customer_id string"),
        "products": spark.createDataFrame([("p1",)], "product_id string"),
    }
    _, silver, q, _ = run(spark, pii, "orders", rows, targets=targets, fx=fx_silver(spark, [("2026-01-01", "EUR", "1")]))
    assert {r["order_id"] for r in silver.collect()} == {"ok", "offset"}  # offset is 23:00Z on the 2nd
    assert {r["order_id"]: r["_reasons"] for r in q.collect()} == {"edge": ["future_order_ts"]}


def test_dataset_rules_each_reason(spark, pii):
    _, _, q, _ = run(
        spark,
        pii,
        "opportunities",
        [
            {
                "opportunity_id": "op1",
                "account_id": "a1",
                "stage": "won-ish",
                "amount": "-1",
                "currency": "ABC",
                "probability": "150",
                "created_date": "2026-02-30T10:00:00Z",  # no such day
                "last_modified_date": TS,
            }
        ],
        known=["EUR"],
    )
    assert q.collect()[0]["_reasons"] == [
        "invalid_amount",
        "invalid_created_date",
        "invalid_currency",
        "invalid_probability",
        "invalid_stage",
    ]
    _, _, q, _ = run(
        spark,
        pii,
        "rates",
        [{"rate_date": "2026-11-01", "base_ccy": "eur", "quote_ccy": "E1", "rate": "0", "as_of_ts": TS}],
    )
    assert q.collect()[0]["_reasons"] == ["invalid_base_ccy", "invalid_quote_ccy", "invalid_rate"]
    _, _, q, _ = run(spark, pii, "customers", [customer("c1", country="USA")])
    assert q.collect()[0]["_reasons"] == ["invalid_country"]
    _, _, q, _ = run(spark, pii, "accounts", [{"account_id": "a", "annual_revenue": "-3", "last_modified_date": TS}])
    assert q.collect()[0]["_reasons"] == ["invalid_annual_revenue"]
    _, _, q, _ = run(
        spark, pii, "products", [{"product_id": "p", "unit_price": "-1", "currency": "usd", "last_modified_ts": TS}]
    )
    assert q.collect()[0]["_reasons"] == ["invalid_unit_price"]
    _, _, q, _ = run(
        spark,
        pii,
        "order_events",
        [{"event_id": "e", "order_id": "o", "event_type": "LOST", "event_ts": TS}],
        targets={"orders": spark.createDataFrame([("o",)], "order_id string")},
    )
    assert q.collect()[0]["_reasons"] == ["invalid_event_type"]
    _, _, q, _ = run(
        spark,
        pii,
        "behavior",
        [{"event_id": "e", "event_name": "dance", "event_ts": TS}],
        targets={"customers": spark.createDataFrame([("c",)], "customer_id string")},
    )
    assert q.collect()[0]["_reasons"] == ["invalid_event_name"]


def test_normalisation_vocabularies_and_optional_rules(spark, pii):
    rows = [
        {"account_id": " a1 ", "industry": "  finance", "billing_country": "de", "annual_revenue": "",
         "primary_email": "  Bob@Example.COM ", "last_modified_date": TS},
        {"account_id": "a2", "industry": "Space", "primary_email": "not-an-email", "last_modified_date": TS},
        {"account_id": "a3", "last_modified_date": TS},
    ]
    _, silver, _, counts = run(spark, pii, "accounts", rows)
    s = rows_by(silver, "account_id")
    assert set(s) == {"a1", "a2", "a3"} and counts.quarantined == 0
    assert [s[a]["industry"] for a in ("a1", "a2", "a3")] == ["Finance", "Other", "Unknown"]
    assert s["a1"]["billing_country"] == "DE" and s["a1"]["annual_revenue"] is None
    assert s["a1"]["primary_email_domain"] == "example.com"
    assert s["a2"]["primary_email_hash"] is None and s["a2"]["primary_email_enc"] is None
    assert "primary_email" not in silver.columns


def test_behavior_metadata_and_urls(spark, pii):
    rows = [
        {"event_id": "e1", "event_name": " Page_View", "event_ts": TS, "url_1": "/a", "url_2": " ",
         "metadata": '{"k": 1}', "device": " Mobile", "geo": "de"},
        {"event_id": "e2", "event_name": "login", "event_ts": "2026-11-01 10:00:00", "metadata": "nope{",
         "url_2": "/b"},
    ]
    _, silver, _, counts = run(spark, pii, "behavior", rows, targets={"customers": spark.createDataFrame([("c",)], "customer_id string")})
    s = rows_by(silver, "event_id")
    assert s["e1"]["event_name"] == "page_view" and s["e1"]["device"] == "mobile" and s["e1"]["geo"] == "DE"
    assert s["e1"]["urls"] == ["/a"] and s["e2"]["urls"] == ["/b"]
    assert s["e1"]["metadata"] == '{"k": 1}' and s["e2"]["metadata"] is None
    assert s["e2"]["event_ts"] == dt.datetime(2026, 11, 1, 10, 0)
    assert counts.invalid_json_nulled == 1


# -- step 3: versioning -----------------------------------------------------------------------


def test_versioning_greatest_version_then_latest_dt(spark, pii):
    rows = [
        customer("c1", segment="old", last_modified_ts="2026-11-01T10:00:00Z"),
        customer("c1", segment="new", last_modified_ts="2026-11-02T10:00:00Z", _dt="2026-11-02"),
        customer("c1", segment="stale", last_modified_ts="2026-10-01T10:00:00Z", _dt="2026-11-03"),
        customer("c2", segment="first", _dt="2026-11-01"),
        customer("c2", segment="tie-later-dt", _dt="2026-11-04"),
        customer("c3", segment="bad", country="XXX", last_modified_ts="2026-12-01T00:00:00Z"),
        customer("c3", segment="good"),
    ]
    _, silver, q, counts = run(spark, pii, "customers", rows)
    s = rows_by(silver, "customer_id")
    assert s["c1"]["segment"] == "new"
    assert s["c2"]["segment"] == "tie-later-dt"
    assert s["c3"]["segment"] == "good"  # the newer version fails a rule: the older passing one is current
    assert counts.superseded == 3 and counts.quarantined == 1 and counts.conserved


def test_no_version_column_keeps_earliest_dt(spark, pii):
    rows = [
        {"event_id": "e1", "order_id": "o1", "event_type": "PAID", "event_ts": TS, "_dt": "2026-11-03"},
        {"event_id": "e1", "order_id": "o1", "event_type": "SHIPPED", "event_ts": TS, "_dt": "2026-11-02"},
    ]
    _, silver, _, counts = run(spark, pii, "order_events", rows, targets={"orders": spark.createDataFrame([("o1",)], "order_id string")})
    assert [r["event_type"] for r in silver.collect()] == ["SHIPPED"]
    assert counts.superseded == 1


# -- step 4: references and FX ----------------------------------------------------------------


def test_orphans_only_for_current_rows_and_nullable_references(spark, pii):
    accounts = spark.createDataFrame([("a1",)], "account_id string")
    rows = [
        {"contact_id": "k1", "account_id": "a1", "last_modified_at": TS},
        {"contact_id": "k2", "account_id": "zz", "last_modified_at": TS},
        {"contact_id": "k3", "last_modified_at": TS},
        {"contact_id": "k4", "account_id": "zz", "last_modified_at": "2026-10-01T00:00:00Z"},
        {"contact_id": "k4", "account_id": "a1", "last_modified_at": TS},
    ]
    _, silver, q, counts = run(spark, pii, "contacts", rows, targets={"accounts": accounts})
    assert {r["contact_id"] for r in silver.collect()} == {"k1", "k3", "k4"}
    assert {r["contact_id"]: r["_reasons"] for r in q.collect()} == {"k2": ["orphan_account"]}
    assert counts.superseded == 1


def test_asof_fx_conversion_half_up_and_missing_rate(spark, pii):
    fx = fx_silver(
        spark,
        [("2026-10-01", "EUR", "2"), ("2026-10-05", "EUR", "4"), ("2026-10-10", "GBP", "0.5"), ("2026-10-01", "JPY", "3")],
    )
    base = {"product_id": "p1", "customer_id": "c1", "quantity": "1", "status": "PAID", "last_modified_ts": TS, "_dt": "2026-11-01"}
    rows = [
        {**base, "order_id": "before", "order_ts": "2026-10-04T23:00:00Z", "amount": "1.25", "currency": "EUR"},
        {**base, "order_id": "on", "order_ts": "2026-10-05T00:00:00Z", "amount": "1.30", "currency": "eur"},
        {**base, "order_id": "after", "order_ts": "2026-10-31T00:00:00Z", "amount": "10.00", "currency": "EUR"},
        {**base, "order_id": "norate", "order_ts": "2026-10-09T00:00:00Z", "amount": "1.00", "currency": "GBP"},
        {**base, "order_id": "usd", "order_ts": "2026-10-09T00:00:00Z", "amount": "2.345", "currency": "USD"},
        {**base, "order_id": "third", "order_ts": "2026-10-09T00:00:00Z", "amount": "0.01", "currency": "JPY"},
    ]
    targets = {
        "customers": spark.createDataFrame([("c1",)], "customer_id string"),
        "products": spark.createDataFrame([("p1",)], "product_id string"),
    }
    _, silver, q, _ = run(spark, pii, "orders", rows, targets=targets, fx=fx, known=["EUR", "GBP", "JPY"])
    s = {r["order_id"]: r["amount_usd"] for r in silver.collect()}
    assert s == {
        "before": Decimal("0.63"),  # 1.25 / 2 = 0.625 -> half-up
        "on": Decimal("0.33"),  # 1.30 / 4 = 0.325 -> half-up, the rate of that very day
        "after": Decimal("2.50"),
        "usd": Decimal("2.35"),  # money parsed half-up, USD uses 1
        "third": Decimal("0.00"),  # 0.0033 -> 0.00
    }
    assert {r["order_id"]: r["_reasons"] for r in q.collect()} == {"norate": ["missing_fx_rate"]}
    order_date = {r["order_id"]: r["order_date"] for r in silver.collect()}
    assert order_date["before"] == dt.date(2026, 10, 4)


# -- PII ---------------------------------------------------------------------------------------


def test_pii_hash_and_decrypt_round_trip(spark, pii):
    c, silver, q, _ = run(
        spark,
        pii,
        "customers",
        [customer("c1", email=" Ann.Lee@Mail.COM ", first_name="Ann", phone="+1 555"), customer("c2", country="1X", email="b@x.io")],
    )
    r = silver.collect()[0]
    expected = hashlib.sha256(("test-salt" + "ann.lee@mail.com").encode()).hexdigest()
    assert r["email_hash"] == expected
    assert r["email_domain"] == "mail.com"
    assert silver.select(pii.decrypt(F.col("email_enc"))).collect()[0][0] == "ann.lee@mail.com"
    assert not {"email", "first_name", "last_name", "phone"} & set(silver.columns)
    # quarantine keeps raw values, PII encrypted the same way
    qr = q.collect()[0]
    assert "email" not in q.columns and "email_enc" in q.columns
    assert q.select(pii.decrypt(F.col("email_enc"))).collect()[0][0] == "b@x.io"
    assert qr["country"] == "1X"


def test_quarantined_pii_is_encrypted_and_decrypts_to_the_raw_value(spark, pii):
    """Quarantine keeps raw values: the PII columns as delivered (untrimmed, mixed case), but only
    as ``<col>_enc``; an authorised user recovers them with aes_decrypt and the key."""
    raw = {"email": "  Ann.Lee@Mail.COM ", "first_name": "Ann", "last_name": "Lee", "phone": "+1-555-555-0101"}
    # an unbalanced quote: the parser puts the rest of the line (PII included) into one field
    bad_line = 'c9,"zoe@x.io,Zoë,Ng,+1-555-555-0199,DE'
    broken = {"customer_id": "c9", "email": 'zoe@x.io,Zoë,Ng,+1-555-555-0199,DE', "_corrupt_record": bad_line,
              "_source_file": "/l/broken.csv"}
    _, silver, q, _ = run(spark, pii, "customers", [customer("c1", country="1X", **raw), broken])
    assert silver.count() == 0
    assert not {"email", "first_name", "last_name", "phone", "_corrupt_record"} & set(q.columns)
    got = rows_by(
        q.select(
            "_source_file",
            "customer_id",
            *[pii.decrypt(F.col(f"{c}_enc")).alias(c) for c in raw],
            pii.decrypt(F.col("_corrupt_record_enc")).alias("line"),
            *[F.col(f"{c}_enc") for c in raw],
        ),
        "_source_file",
    )
    ok = got["/landing/warehouse/customers/dt=2026-11-01/part-1.csv"]
    for col, value in raw.items():
        assert ok[col] == value, col
        assert value.strip() not in ok[f"{col}_enc"]  # ciphertext, not the value
    assert ok["line"] is None and ok["customer_id"] == "c1"
    # the malformed line: only its encrypted text; its untrustworthy fields are null
    bad = got["/l/broken.csv"]
    assert bad["line"] == bad_line
    assert bad["customer_id"] is None and bad["email"] is None
    # a wrong key cannot read it
    from etl_assets.transforms.silver import Pii

    other = Pii(salt="s", key="fedcba9876543210")
    assert q.where("customer_id = 'c1'").select(
        F.expr(f"try_aes_decrypt(unbase64(email_enc), '{other.key}', 'GCM')")
    ).collect()[0][0] is None
