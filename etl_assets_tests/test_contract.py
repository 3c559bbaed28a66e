"""Contract coverage (CONTRACT.md sections 2 and 4) on tiny hand-made inputs.

Every expected value here is written out literally or computed independently of the project's
code: Python ``datetime`` for instants, ``Decimal`` with ROUND_HALF_UP for money, ``hashlib`` for
hashes and ``cryptography``'s AESGCM for decryption. Instants are compared as epoch
microseconds computed by Spark (``unix_micros``), so no comparison depends on the time zone of
the Python process.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from decimal import ROUND_HALF_UP, Decimal

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl_assets.registry import dataset
from etl_assets.schemas import spark_schema
from etl_assets.storage import LocalLandingStore
from etl_assets.transforms.bronze import read_bronze
from etl_assets.transforms.silver import (
    Pii,
    classify,
    known_currencies,
    silver_frame,
)
from etl_assets_tests.helpers import classified, rows_by

TS = "2026-11-01T10:00:00Z"
UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def micros(*args, tz=UTC) -> int:
    """Epoch microseconds of a wall-clock time in ``tz``, computed with integer arithmetic."""
    return (dt.datetime(*args, tzinfo=tz) - EPOCH) // dt.timedelta(microseconds=1)


def half_up(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def run(spark, pii, name, rows, targets=None, fx=None, known=None):
    """Classify hand-made bronze rows (``helpers.classified``)."""
    _, silver, quarantine, counts = classified(spark, pii, name, rows, targets, fx, known)
    return silver, quarantine, counts


def reasons_by(q, key: str) -> dict:
    return {r[key]: r["_reasons"] for r in q.collect()}


def keys(spark, col: str, values) -> object:
    return spark.createDataFrame([(v,) for v in values], f"{col} string")


def silver_rates(spark, pii, rows):
    """The silver fx rates table built (by the platform's silver step) from (rate_date,
    quote_ccy, rate[, as_of_ts]) tuples."""
    out = [
        {"rate_date": r[0], "base_ccy": "USD", "quote_ccy": r[1], "rate": r[2], "as_of_ts": r[3] if len(r) > 3 else TS}
        for r in rows
    ]
    silver, _, _ = run(spark, pii, "rates", out)
    return silver


def account(i, **kw):
    base = {"account_id": i, "created_date": "2026-03-28T08:00:00Z", "last_modified_date": "2026-03-28T08:00:00Z"}
    base.update(kw)
    return base


def opportunity(i, **kw):
    base = {
        "opportunity_id": i,
        "account_id": "a1",
        "stage": "Proposal",
        "amount": "10.00",
        "currency": "USD",
        "created_date": "2026-03-01T12:00:00Z",
        "last_modified_date": "2026-03-28T08:00:00Z",
    }
    base.update(kw)
    return base


# -- CSV with a byte-order mark (bronze reader) --------------------------------------------------


def test_csv_with_bom_loads_clean_first_column(spark, pii, tmp_path):
    """A UTF-8 BOM is tolerated: it neither renames the first column nor sticks to its value,
    and a BOM file and a plain file of the same header load alike."""
    ds = dataset("accounts")
    folder = tmp_path / "crm" / "accounts" / "dt=2026-11-01"
    folder.mkdir(parents=True)
    header = ",".join(ds.source_columns)
    bom_line = "A-BOM,Acme,Finance,10,Berlin,DE,info@acme.com,2026-03-28T08:00:00Z,2026-03-28T08:00:00Z"
    plain_line = "A-PLAIN,Globex,Retail,20,Paris,FR,info@globex.com,2026-03-28T08:00:00Z,2026-03-28 09:00:00"
    (folder / "part-1.csv").write_bytes(b"\xef\xbb\xbf" + f"{header}\r\n{bom_line}\r\n".encode("utf-8"))
    (folder / "part-2.csv").write_bytes(f"{header}\n{plain_line}\n".encode("utf-8"))
    read = read_bronze(spark, ds, LocalLandingStore(str(tmp_path)), "run-bom")
    assert read.drift == []  # the header's first name is "account_id", not "\ufeffaccount_id"
    assert read.df.columns[: len(ds.source_columns)] == ds.source_columns
    rows = rows_by(read.df, "account_id")
    assert set(rows) == {"A-BOM", "A-PLAIN"}  # no header line read as data, no BOM in the value
    assert all(r["_corrupt_record"] is None for r in rows.values())
    assert rows["A-BOM"]["account_name"] == "Acme" and rows["A-BOM"]["last_modified_date"] == "2026-03-28T08:00:00Z"
    # and the first column is usable downstream: silver keys and types
    c = classify(read.df, ds, {}, None, []).cache()
    silver = silver_frame(c, ds, pii)
    got = {r["account_id"]: r["lmd"] for r in silver.select("account_id", F.unix_micros("last_modified_date").alias("lmd")).collect()}
    assert got == {"A-BOM": micros(2026, 3, 28, 8), "A-PLAIN": micros(2026, 3, 28, 9)}


# -- timestamps ---------------------------------------------------------------------------------


TIMESTAMP_CASES = {
    # last_modified_ts text -> epoch micros (None: quarantined as invalid_last_modified_ts)
    "frac1": ("2026-11-01T10:00:00.5Z", micros(2026, 11, 1, 10, 0, 0, 500_000)),
    "frac9": ("2026-11-01T10:00:00.123456789+02:00", micros(2026, 11, 1, 8, 0, 0, 123_456)),  # cut to micros
    "offset": ("2026-11-01T23:30:00-05:00", micros(2026, 11, 2, 4, 30)),
    "space": ("2026-11-01 23:30:00", micros(2026, 11, 1, 23, 30)),  # the space form means UTC
    "zulu": ("2026-11-01T23:30:00Z", micros(2026, 11, 1, 23, 30)),
    "date_only": ("2026-11-01", None),
    "date_only_padded": (" 2026-11-01 ", None),
    "no_zone": ("2026-11-01T10:00:00", None),
}


@pytest.mark.parametrize("session_tz", ["UTC", "America/New_York"])
def test_timestamp_forms_and_a_date_alone(spark, pii, session_tz):
    """ISO-8601 with a fraction of 1 to 9 digits and Z or an offset, the space form meaning UTC;
    a date alone (or a time without zone in T form) is not a timestamp. The instants do not depend
    on the session time zone."""
    rows = [{"customer_id": k, "last_modified_ts": text} for k, (text, _) in TIMESTAMP_CASES.items()]
    before = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", session_tz)
    try:
        silver, q, counts = run(spark, pii, "customers", rows)
        got = {r["customer_id"]: r["us"] for r in silver.select("customer_id", F.unix_micros("last_modified_ts").alias("us")).collect()}
        quarantined = reasons_by(q, "customer_id")
    finally:
        spark.conf.set("spark.sql.session.timeZone", before)
    assert got == {k: us for k, (_, us) in TIMESTAMP_CASES.items() if us is not None}
    assert quarantined == {k: ["invalid_last_modified_ts"] for k, (_, us) in TIMESTAMP_CASES.items() if us is None}
    assert counts.conserved


def test_crm_created_and_last_modified_dates_are_timestamps(spark, pii):
    """accounts/opportunities ``created_date``/``last_modified_date`` are UTC timestamps (CRM
    exports write full timestamps); a date alone there is ``invalid_<col>``."""
    for table in ("silver/accounts", "silver/opportunities"):
        schema = spark_schema(table)
        for col in ("created_date", "last_modified_date"):
            assert schema[col].dataType == T.TimestampType(), (table, col)
    accounts = [
        account("a1", created_date="2026-03-28T08:00:00Z", last_modified_date="2026-03-28 09:15:30"),
        account("a2", created_date="2026-03-28"),
        account("a3", last_modified_date="2026-03-28"),
        account("a4", created_date="2026-03-27", last_modified_date="2026-03-28"),
    ]
    silver, q, _ = run(spark, pii, "accounts", accounts)
    assert silver.schema["created_date"].dataType == T.TimestampType()
    got = silver.select("account_id", F.unix_micros("created_date").alias("c"), F.unix_micros("last_modified_date").alias("m")).collect()
    assert [tuple(r) for r in got] == [("a1", micros(2026, 3, 28, 8), micros(2026, 3, 28, 9, 15, 30))]
    assert reasons_by(q, "account_id") == {
        "a2": ["invalid_created_date"],
        "a3": ["invalid_last_modified_date"],
        "a4": ["invalid_created_date", "invalid_last_modified_date"],
    }
    opps = [
        opportunity("o1", created_date="2026-03-01T23:30:00-05:00", last_modified_date="2026-03-28T08:00:00.250Z"),
        opportunity("o2", created_date="2026-03-01"),
        opportunity("o3", last_modified_date="2026-03-28"),
    ]
    silver, q, _ = run(spark, pii, "opportunities", opps, targets={"accounts": keys(spark, "account_id", ["a1"])})
    got = silver.select("opportunity_id", F.unix_micros("created_date").alias("c"), F.unix_micros("last_modified_date").alias("m")).collect()
    assert [tuple(r) for r in got] == [("o1", micros(2026, 3, 2, 4, 30), micros(2026, 3, 28, 8, 0, 0, 250_000))]
    assert reasons_by(q, "opportunity_id") == {"o2": ["invalid_created_date"], "o3": ["invalid_last_modified_date"]}


def test_crm_versioning_orders_changes_of_one_day_by_time(spark, pii):
    """Two versions of an account changed on the same day: the later instant wins, even when it
    was delivered on an earlier ``_dt`` (as dates the two would tie and the later ``_dt`` win)."""
    rows = [
        account("a1", account_name="later-instant", last_modified_date="2026-11-01T20:00:00+01:00", _dt="2026-11-02"),
        account("a1", account_name="earlier-instant", last_modified_date="2026-11-01T18:00:00Z", _dt="2026-11-03"),
        # the same instant in two renderings: a real tie, the later _dt wins
        account("a2", account_name="first", last_modified_date="2026-11-01 18:00:00", _dt="2026-11-02"),
        account("a2", account_name="tie-later-dt", last_modified_date="2026-11-01T20:00:00+02:00", _dt="2026-11-03"),
    ]
    silver, _, counts = run(spark, pii, "accounts", rows)
    assert {r["account_id"]: r["account_name"] for r in silver.collect()} == {"a1": "later-instant", "a2": "tie-later-dt"}
    assert counts.superseded == 2 and counts.conserved


# -- normalisation of valid mixed-case input -------------------------------------------------------


def test_codes_are_normalised_to_their_case(spark, pii):
    silver, q, _ = run(spark, pii, "customers", [{"customer_id": "c1", "country": " de", "segment": " SMB ", "last_modified_ts": TS}])
    assert q.count() == 0
    r = silver.collect()[0]
    assert (r["country"], r["segment"]) == ("DE", "smb")

    silver, q, _ = run(spark, pii, "contacts", [{"contact_id": "k1", "lifecycle_stage": "MQL ", "last_modified_at": TS}])
    assert q.count() == 0 and silver.collect()[0]["lifecycle_stage"] == "mql"

    order = {"order_id": "o1", "customer_id": "c1", "product_id": "p1", "order_ts": TS, "quantity": "1",
             "amount": "1.00", "currency": "usd", "status": " paid", "last_modified_ts": TS}
    silver, q, _ = run(spark, pii, "orders", [order], targets={"customers": keys(spark, "customer_id", ["c1"]),
                                                                 "products": keys(spark, "product_id", ["p1"])})
    assert q.count() == 0
    r = silver.collect()[0]
    assert (r["status"], r["currency"]) == ("PAID", "USD")

    silver, q, _ = run(spark, pii, "order_events", [{"event_id": "e1", "order_id": "o1", "event_type": "Shipped", "event_ts": TS}],
                       targets={"orders": keys(spark, "order_id", ["o1"])})
    assert q.count() == 0 and silver.collect()[0]["event_type"] == "SHIPPED"

    silver, q, _ = run(spark, pii, "rates", [{"rate_date": "2026-11-01", "base_ccy": "usd", "quote_ccy": " Eur",
                                              "rate": "0.9", "as_of_ts": TS}])
    assert q.count() == 0
    r = silver.collect()[0]
    assert (r["base_ccy"], r["quote_ccy"]) == ("USD", "EUR")


def test_stage_matched_case_insensitively(spark, pii):
    rows = [
        opportunity("o1", stage="closed won"),
        opportunity("o2", stage=" NEGOTIATION"),
        opportunity("o3", stage="closed-won"),
    ]
    silver, q, _ = run(spark, pii, "opportunities", rows, targets={"accounts": keys(spark, "account_id", ["a1"])})
    assert {r["opportunity_id"]: r["stage"] for r in silver.collect()} == {"o1": "Closed Won", "o2": "Negotiation"}
    assert reasons_by(q, "opportunity_id") == {"o3": ["invalid_stage"]}


# -- references ------------------------------------------------------------------------------------


def test_orders_orphan_customer_and_orphan_product(spark, pii):
    base = {"order_ts": TS, "quantity": "1", "amount": "1.00", "currency": "USD", "status": "PAID", "last_modified_ts": TS}
    rows = [
        {**base, "order_id": "ok", "customer_id": "c1", "product_id": "p1"},
        {**base, "order_id": "no-cust", "customer_id": "c9", "product_id": "p1"},
        {**base, "order_id": "no-prod", "customer_id": "c1", "product_id": "p9"},
        {**base, "order_id": "neither", "customer_id": "c9", "product_id": "p9"},
    ]
    targets = {"customers": keys(spark, "customer_id", ["c1"]), "products": keys(spark, "product_id", ["p1"])}
    silver, q, counts = run(spark, pii, "orders", rows, targets=targets)
    assert [r["order_id"] for r in silver.collect()] == ["ok"]
    assert reasons_by(q, "order_id") == {
        "no-cust": ["orphan_customer"],
        "no-prod": ["orphan_product"],
        "neither": ["orphan_customer", "orphan_product"],
    }
    assert counts.reasons == {"orphan_customer": 2, "orphan_product": 2}


def test_behavior_orphan_customer_and_anonymous(spark, pii):
    rows = [
        {"event_id": "known", "customer_id": "c1", "event_name": "login", "event_ts": TS},
        {"event_id": "anonymous", "event_name": "login", "event_ts": TS},
        {"event_id": "orphan", "customer_id": "c9", "event_name": "login", "event_ts": TS},
    ]
    silver, q, _ = run(spark, pii, "behavior", rows, targets={"customers": keys(spark, "customer_id", ["c1"])})
    assert {r["event_id"] for r in silver.collect()} == {"known", "anonymous"}
    assert reasons_by(q, "event_id") == {"orphan": ["orphan_customer"]}


@pytest.mark.parametrize("session_tz", ["UTC", "America/New_York"])
def test_opportunities_orphan_missing_rate_and_usd_at_the_utc_date_of_created_date(spark, pii, session_tz):
    """``amount_usd`` uses the rate as of the UTC date of ``created_date``: 2026-03-01T23:30-05:00
    is 2026-03-02 in UTC, 2026-03-02T01:00+02:00 is 2026-03-01 -- whatever the session's time
    zone (in New York, the session's local date of "east" would be 2026-03-01 19:00, of "west"
    2026-03-01 23:30)."""
    spark.conf.set("spark.sql.session.timeZone", session_tz)  # put back after the test (conftest)
    rate_0301, rate_0302 = Decimal("2"), Decimal("4")
    fx = silver_rates(spark, pii, [("2026-03-01", "EUR", str(rate_0301)), ("2026-03-02", "EUR", str(rate_0302))])
    rows = [
        opportunity("west", amount="10.00", currency="EUR", created_date="2026-03-01T23:30:00-05:00"),
        opportunity("east", amount="10.00", currency="EUR", created_date="2026-03-02T01:00:00+02:00"),
        opportunity("space", amount="1.30", currency="eur", created_date="2026-03-02 00:00:00"),
        opportunity("half", amount="1.25", currency="EUR", created_date="2026-03-01T00:00:00Z"),
        opportunity("usd", amount="7.77", currency="USD", created_date="2020-01-01T00:00:00Z"),
        opportunity("early", amount="1.00", currency="EUR", created_date="2026-02-28T23:59:59Z"),
        opportunity("norate", amount="1.00", currency="GBP", created_date="2026-03-05T00:00:00Z"),
        opportunity("orphan", account_id="a9", amount="1.00", currency="EUR", created_date="2026-03-05T00:00:00Z"),
    ]
    silver, q, _ = run(spark, pii, "opportunities", rows, targets={"accounts": keys(spark, "account_id", ["a1"])},
                       fx=fx, known=["EUR", "GBP"])
    got = {r["opportunity_id"]: r["amount_usd"] for r in silver.collect()}
    assert got == {
        "west": half_up(Decimal("10.00") / rate_0302),  # 2.50; the local date would give 5.00
        "east": half_up(Decimal("10.00") / rate_0301),  # 5.00; the local date would give 2.50
        "space": half_up(Decimal("1.30") / rate_0302),  # 0.325 -> 0.33
        "half": half_up(Decimal("1.25") / rate_0301),  # 0.625 -> 0.63
        "usd": Decimal("7.77"),
    }
    assert got["west"] == Decimal("2.50") and got["east"] == Decimal("5.00")
    assert reasons_by(q, "opportunity_id") == {
        "early": ["missing_fx_rate"],
        "norate": ["missing_fx_rate"],
        "orphan": ["orphan_account"],
    }


# -- currencies, booleans, fx versioning -------------------------------------------------------------


def test_known_currencies_are_usd_and_the_silver_fx_quote_currencies(spark, pii):
    """A currency with a silver fx rate is known; one whose only rate row was quarantined, or
    that has no rate at all, is ``invalid_currency``."""
    fx = silver_rates(spark, pii, [("2026-11-01", "EUR", "0.9"), ("2026-11-01", "GBP", "0")])  # GBP: invalid_rate
    known = known_currencies(fx)
    assert known == ["EUR"]
    base = {"unit_price": "1.00", "last_modified_ts": TS}
    rows = [
        {**base, "product_id": "p-eur", "currency": "eur"},
        {**base, "product_id": "p-usd", "currency": "USD"},
        {**base, "product_id": "p-gbp", "currency": "GBP"},
        {**base, "product_id": "p-chf", "currency": "CHF"},
    ]
    silver, q, _ = run(spark, pii, "products", rows, known=known)
    assert {r["product_id"]: r["currency"] for r in silver.collect()} == {"p-eur": "EUR", "p-usd": "USD"}
    assert reasons_by(q, "product_id") == {"p-gbp": ["invalid_currency"], "p-chf": ["invalid_currency"]}


def test_products_is_active_boolean(spark, pii):
    base = {"unit_price": "1.00", "currency": "USD", "last_modified_ts": TS}
    rows = [
        {**base, "product_id": "t", "is_active": "TRUE"},
        {**base, "product_id": "f", "is_active": " false "},
        {**base, "product_id": "n", "is_active": ""},
        {**base, "product_id": "bad", "is_active": "maybe"},
    ]
    silver, q, _ = run(spark, pii, "products", rows)
    assert silver.schema["is_active"].dataType == T.BooleanType()
    assert {r["product_id"]: r["is_active"] for r in silver.collect()} == {"t": True, "f": False, "n": None}
    assert reasons_by(q, "product_id") == {"bad": ["invalid_is_active"]}


def test_fx_versioning_on_rate_date_and_quote_ccy(spark, pii):
    """One row per (rate_date, quote_ccy): the greatest ``as_of_ts`` (an instant, whatever its
    rendering) wins, whatever the delivery order."""
    rows = [
        {"rate_date": "2026-11-01", "quote_ccy": "EUR", "rate": "1.1", "as_of_ts": "2026-11-01T10:00:00Z"},
        {"rate_date": "2026-11-01", "quote_ccy": "EUR", "rate": "1.2", "as_of_ts": "2026-11-01T12:00:00Z"},
        # delivered later, text looks later, but 13:30+02:00 is 11:30Z: older -> superseded
        {"rate_date": "2026-11-01", "quote_ccy": "EUR", "rate": "1.0", "as_of_ts": "2026-11-01T13:30:00+02:00", "_dt": "2026-11-03"},
        {"rate_date": "2026-11-01", "quote_ccy": "GBP", "rate": "0.8", "as_of_ts": "2026-11-01T09:00:00Z"},
        {"rate_date": "2026-11-02", "quote_ccy": "eur", "rate": "1.3", "as_of_ts": "2026-11-02T08:00:00Z"},
    ]
    rows = [{"base_ccy": "USD", **r} for r in rows]
    silver, q, counts = run(spark, pii, "rates", rows)
    got = {(r["rate_date"], r["quote_ccy"]): r["rate"] for r in silver.collect()}
    assert got == {
        (dt.date(2026, 11, 1), "EUR"): Decimal("1.20000000"),
        (dt.date(2026, 11, 1), "GBP"): Decimal("0.80000000"),
        (dt.date(2026, 11, 2), "EUR"): Decimal("1.30000000"),
    }
    assert counts.superseded == 2 and q.count() == 0 and counts.conserved


# -- PII --------------------------------------------------------------------------------------------


def _aes_gcm_decrypt(key: str, b64: str) -> str:
    """Spark's GCM layout: 12-byte IV, ciphertext, 16-byte tag; no associated data."""
    raw = base64.b64decode(b64)
    return AESGCM(key.encode("ascii")).decrypt(raw[:12], raw[12:], None).decode("utf-8")


def test_accounts_primary_email_hash_and_enc(spark, pii):
    silver, _, _ = run(spark, pii, "accounts", [account("a1", primary_email="  Billing@Acme-Corp.COM ")])
    r = silver.collect()[0]
    normalised = "billing@acme-corp.com"
    assert r["primary_email_hash"] == hashlib.sha256((pii.salt + normalised).encode("utf-8")).hexdigest()
    assert _aes_gcm_decrypt(pii.key, r["primary_email_enc"]) == normalised
    assert r["primary_email_domain"] == "acme-corp.com"
    assert "primary_email" not in silver.columns


def test_aes_192_key_round_trip(spark):
    """A 24-character ETL_PII_KEY is an AES-192 key: what silver encrypts decrypts with that key
    (cryptography's AESGCM and Spark's aes_decrypt alike), and not with a 16-character one."""
    key = "k24-0123456789abcdefghij"
    assert len(key) == 24
    pii24 = Pii(salt="salt-192", key=key)
    silver, _, _ = run(spark, pii24, "customers", [{"customer_id": "c1", "email": " Ann@Mail.COM", "last_modified_ts": TS}])
    r = silver.collect()[0]
    assert _aes_gcm_decrypt(key, r["email_enc"]) == "ann@mail.com"
    spark_plain = silver.select(F.expr(f"cast(aes_decrypt(unbase64(email_enc), '{key}', 'GCM') as string)")).collect()[0][0]
    assert spark_plain == "ann@mail.com"
    assert r["email_hash"] == hashlib.sha256(b"salt-192ann@mail.com").hexdigest()
    with pytest.raises(Exception):
        _aes_gcm_decrypt(key[:16], r["email_enc"])
