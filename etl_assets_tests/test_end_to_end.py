"""End to end: generate a small landing zone, run ``etl_all`` in process, check the lake.

Gold values are recomputed here independently, with pyarrow and Python ``Decimal`` from the
published silver tables, not with the platform's Spark code.
"""

from __future__ import annotations

import collections
import shutil
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from dagster import DagsterInstance

from etl_assets.definitions import build_definitions
from etl_assets.registry import DATASETS, GOLD_TABLES
from etl_assets.sample_data import generate
from etl_assets.settings import Settings
from etl_assets_tests.conftest import TEST_PII


def read(lake: Path, layer: str, table: str) -> list[dict]:
    return pads.dataset(str(lake / layer / table), format="parquet").to_table().to_pylist()


def run_etl_all(landing: Path, lake: Path, instance=None):
    settings = Settings(
        env="local", landing_uri=str(landing), lake_uri=str(lake), pii_salt=TEST_PII.salt, pii_key=TEST_PII.key
    )
    job = build_definitions(settings).resolve_job_def("etl_all")
    return job.execute_in_process(instance=instance or DagsterInstance.ephemeral(), raise_on_error=False)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("e2e")
    landing, lake = root / "landing", root / "lake"
    generate(landing, days=3, seed=11, scale=0.02)
    result = run_etl_all(landing, lake)
    return dict(result=result, landing=landing, lake=lake)


def materializations(result) -> dict[str, dict]:
    out = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        out["/".join(mat.asset_key.path)] = {k: v.value for k, v in mat.metadata.items()}
    return out


def test_etl_all_publishes_every_table(e2e):
    assert e2e["result"].success
    lake = e2e["lake"]
    for ds in DATASETS:
        for layer in ("bronze", "silver", "quarantine"):
            assert list((lake / layer / ds.name).rglob("*.parquet")), f"{layer}/{ds.name} missing"
    for t in GOLD_TABLES:
        assert list((lake / "gold" / t).rglob("*.parquet")), f"gold/{t} missing"
    assert not list((lake / "_staging").rglob("*.parquet")), "staging left behind"


def test_conservation_for_every_dataset(e2e):
    mats = materializations(e2e["result"])
    lake = e2e["lake"]
    for ds in DATASETS:
        bronze = len(read(lake, "bronze", ds.name))
        silver = len(read(lake, "silver", ds.name))
        quarantine = read(lake, "quarantine", ds.name)
        meta = mats[f"silver/{ds.name}"]
        assert meta["bronze_rows"] == bronze and meta["silver_rows"] == silver
        assert bronze == meta["duplicate_row"] + len(quarantine) + meta["superseded"] + silver, ds.name
        assert meta["dagster/row_count"] == silver
        # every quarantined row has a non-empty, sorted reason list; per-reason counts add up
        per_reason = collections.Counter(r for row in quarantine for r in row["_reasons"])
        assert all(row["_reasons"] and row["_reasons"] == sorted(row["_reasons"]) for row in quarantine)
        for reason, n in per_reason.items():
            assert meta[f"quarantined_{reason}"] == n


def test_silver_keys_unique_and_no_raw_pii(e2e):
    lake = e2e["lake"]
    for ds in DATASETS:
        rows = read(lake, "silver", ds.name)
        keys = [tuple(r[k] for k in ds.key) for r in rows]
        assert len(keys) == len(set(keys)), ds.name
        pii_cols = {c.name for c in ds.columns if c.pii}
        assert not pii_cols & set(rows[0]) if rows else True
        assert not pii_cols & set(read(lake, "quarantine", ds.name)[0] if read(lake, "quarantine", ds.name) else {})
    # no raw email anywhere in silver or gold
    raw_emails = set()
    for f in (e2e["landing"] / "warehouse" / "customers").rglob("*.csv"):
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
            raw_emails.update(p.strip().lower() for p in line.split(",") if "@" in p and "." in p)
    assert raw_emails
    for layer, table in [("silver", "customers"), ("gold", "customer_360")]:
        text = repr(read(lake, layer, table))
        assert not any(e in text for e in list(raw_emails)[:200])


def _half_up(x: Decimal, places: str = "0.01") -> Decimal:
    return x.quantize(Decimal(places), rounding=ROUND_HALF_UP)


def test_gold_values_recomputed_independently(e2e):
    lake = e2e["lake"]
    orders = {r["order_id"]: r for r in read(lake, "silver", "orders")}
    rates = collections.defaultdict(list)
    for r in read(lake, "silver", "rates"):
        rates[r["quote_ccy"]].append((r["rate_date"], r["rate"]))
    # amount_usd: as-of rate, half-up
    checked = 0
    for o in orders.values():
        if o["currency"] == "USD":
            assert o["amount_usd"] == o["amount"]
            continue
        day = o["order_ts"].date()
        rate = max((d, r) for d, r in rates[o["currency"]] if d <= day)[1]
        assert o["amount_usd"] == _half_up(o["amount"] / rate), o["order_id"]
        checked += 1
    assert checked > 0
    # fact_orders: final_status from the latest event, ties to the higher rank
    rank = {s: i for i, s in enumerate(["PLACED", "PAID", "SHIPPED", "DELIVERED", "CANCELLED", "RETURNED"], 1)}
    latest = {}
    for e in read(lake, "silver", "order_events"):
        k = (e["event_ts"], rank[e["event_type"]])
        if e["order_id"] not in latest or k > latest[e["order_id"]][0]:
            latest[e["order_id"]] = (k, e["event_type"])
    fact = {r["order_id"]: r for r in read(lake, "gold", "fact_orders")}
    assert set(fact) == set(orders)
    for oid, f in fact.items():
        expected = latest[oid][1] if oid in latest else orders[oid]["status"]
        assert f["final_status"] == expected
        assert f["is_revenue"] == (expected not in ("CANCELLED", "RETURNED"))
    # customer_360 revenue and orders
    revenue = collections.defaultdict(Decimal)
    n_orders = collections.Counter()
    for f in fact.values():
        n_orders[f["customer_id"]] += 1
        if f["is_revenue"]:
            revenue[f["customer_id"]] += f["amount_usd"]
    c360 = read(lake, "gold", "customer_360")
    assert len(c360) == len(read(lake, "silver", "customers"))
    for c in c360:
        assert c["total_orders"] == n_orders[c["customer_id"]]
        assert c["revenue_usd"] == revenue[c["customer_id"]]
    # revenue_by_geography adds up to all revenue
    geo_total = sum(r["revenue_usd"] for r in read(lake, "gold", "revenue_by_geography"))
    assert geo_total == sum(revenue.values())
    ind_total = sum(r["revenue_usd"] for r in read(lake, "gold", "revenue_by_industry"))
    assert ind_total == geo_total


def test_unreadable_file_is_rejected_by_name_and_the_rest_publishes(tmp_path, e2e):
    """A truncated Parquet file is rejected: bronze/orders names it (failed ``files_readable``
    check, metadata, log) and publishes the dataset's other files; everything downstream runs."""
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    shutil.copytree(e2e["landing"], landing)
    shutil.copytree(e2e["lake"], lake)
    before = len(read(lake, "bronze", "orders"))
    bad = landing / "warehouse" / "orders" / "dt=2026-11-02" / "truncated.parquet"
    good = next((landing / "warehouse" / "orders").rglob("*.parquet")).read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    result = run_etl_all(landing, lake)
    assert result.success
    (check,) = [c for c in result.get_asset_check_evaluations()
                if c.asset_key.path == ["bronze", "orders"] and c.check_name == "files_readable"]
    assert not check.passed
    assert f"{bad}: cannot read Parquet file" in check.metadata["what_failed"].value
    assert str(bad) in materializations(result)["bronze/orders"]["unreadable_files"]
    done = {"/".join(k.path) for k in (e.asset_key for e in result.get_asset_materialization_events())}
    assert {"bronze/orders", "silver/orders", "gold/fact_orders"} <= done
    assert len(read(lake, "bronze", "orders")) == before  # the rejected file added no row
