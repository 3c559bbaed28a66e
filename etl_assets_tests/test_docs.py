"""The data dictionary (``make docs``) and the asset facts shown in the Dagster UI.

The dictionary is regenerated here (plan frames from empty inputs: no data, no Spark job) and
compared with the checked-in ``docs/data_dictionary.md``: the test fails when it is stale.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from dagster import AssetKey, AssetSpec, LocalFileCodeReference, UrlCodeReference

from etl_assets import docs
from etl_assets.registry import DATASETS, GOLD_TABLES

REPO = Path(__file__).resolve().parents[1]
CHECKED_IN = REPO / "docs" / "data_dictionary.md"


@pytest.fixture(scope="module")
def dictionary(spark) -> str:
    return docs.render(spark)


def test_data_dictionary_is_current(dictionary):
    assert CHECKED_IN.exists(), "docs/data_dictionary.md is missing: run `make docs`"
    current = CHECKED_IN.read_text()
    if current != dictionary:
        diff = "".join(
            list(difflib.unified_diff(current.splitlines(True), dictionary.splitlines(True),
                                      "docs/data_dictionary.md (checked in)", "regenerated"))[:60]
        )
        pytest.fail(f"docs/data_dictionary.md is stale: run `make docs` and commit it\n{diff}")


def _section(text: str, table: str) -> str:
    start = text.index(f"\n### {table}\n")
    end = text.find("\n### ", start + 1)
    return text[start: end if end > 0 else len(text)]


def _row(section: str, column: str) -> list[str]:
    line = next(x for x in section.splitlines() if x.startswith(f"| `{column}` |"))
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


# -- what CONTRACT.md says, written out by hand (never derived from etl_assets' own structures) --

# section 2: the columns of each delivered file, in file order
CONTRACT_COLUMNS = {
    "accounts": "account_id, account_name, industry, annual_revenue, billing_city, billing_country, primary_email, "
                "created_date, last_modified_date",
    "contacts": "contact_id, account_id, first_name, last_name, email, phone, lifecycle_stage, created_at, "
                "last_modified_at",
    "opportunities": "opportunity_id, account_id, opportunity_name, stage, amount, currency, close_date, probability, "
                     "created_date, last_modified_date",
    "customers": "customer_id, email, first_name, last_name, phone, country, segment, signup_date, last_modified_ts",
    "products": "product_id, sku, product_name, category, unit_price, currency, is_active, last_modified_ts",
    "orders": "order_id, customer_id, product_id, order_ts, quantity, unit_price, amount, currency, status, "
              "last_modified_ts",
    "behavior": "event_id, customer_id, event_name, event_ts, session_id, device, geo, url_1, url_2, metadata",
    "order_events": "event_id, order_id, customer_id, event_type, event_ts, payload",
    "rates": "rate_date, base_ccy, quote_ccy, rate, source, as_of_ts",
}
CONTRACT_COLUMNS = {k: [c.strip() for c in v.split(",")] for k, v in CONTRACT_COLUMNS.items()}
LINEAGE = ["_source_file", "_dt", "_ingested_at", "_run_id"]
# section 4, PII: raw emails, names and phone numbers never leave bronze
RAW_PII = {"email", "primary_email", "first_name", "last_name", "phone"}
# section 4: derived silver columns
SILVER_DERIVED = {
    "accounts": {"primary_email_hash": "string", "primary_email_enc": "string"},
    "contacts": {"email_hash": "string", "email_enc": "string", "email_domain": "string"},
    "customers": {"email_hash": "string", "email_enc": "string", "email_domain": "string"},
    "opportunities": {"amount_usd": "decimal(18,2)"},
    "orders": {"order_date": "date", "amount_usd": "decimal(18,2)"},
    "behavior": {"urls": "array<string>"},
}
# section 5: the gold tables' columns, in order
GOLD_COLUMNS = {
    "fact_orders": "order_id, customer_id, product_id, order_date, order_ts, quantity, amount, currency, amount_usd, "
                   "final_status, is_revenue",
    "customer_360": "customer_id, email_hash, country, segment, signup_date, total_orders, revenue_usd, "
                    "first_order_date, last_order_date, total_events, total_sessions, last_activity_ts, "
                    "crm_account_id, industry, annual_revenue, open_pipeline_usd, ltv_tier",
    "product_performance_daily": "order_date, product_id, category, orders, units, revenue_usd, returned_units, "
                                 "return_rate",
    "revenue_by_geography": "month, country, orders, customers, revenue_usd",
    "revenue_by_industry": "month, industry, orders, revenue_usd",
}
GOLD_COLUMNS = {k: [c.strip() for c in v.split(",")] for k, v in GOLD_COLUMNS.items()}
FACT_ORDERS_TYPES = {"order_date": "date", "order_ts": "timestamp", "quantity": "int", "amount": "decimal(18,2)",
                     "amount_usd": "decimal(18,2)", "is_revenue": "boolean"}


def contract_type(dataset: str, column: str) -> str:
    """The silver type of a source column, by the rules of CONTRACT.md section 2."""
    if column.endswith(("_ts", "_at")) or (dataset in ("accounts", "opportunities")
                                           and column in ("created_date", "last_modified_date")):
        return "timestamp"
    if column in ("signup_date", "close_date", "rate_date"):
        return "date"
    if column in ("annual_revenue", "amount", "unit_price"):
        return "decimal(18,2)"
    if column == "rate":
        return "decimal(18,8)"
    if column in ("quantity", "probability"):
        return "int"
    if column == "is_active":
        return "boolean"
    return "string"


def _rows(section: str) -> dict[str, list[str]]:
    """column -> its dictionary row, in the order the section lists them."""
    out = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out[cells[0].strip("`")] = cells
    return out


def test_dictionary_matches_the_contract(dictionary):
    """Every table and column the contract names is documented with the contract's type; the
    expectations are written out above from CONTRACT.md, not taken from the generator."""
    assert set(CONTRACT_COLUMNS) == {ds.name for ds in DATASETS}
    problems = []

    def expect(table, column, rows, type_=None):
        if column not in rows:
            problems.append(f"{table}: no column {column}")
        elif type_ is not None and rows[column][1] != type_:
            problems.append(f"{table}.{column}: {rows[column][1]}, contract {type_}")

    for name, source in CONTRACT_COLUMNS.items():
        # bronze: every delivered column, values as strings, plus the lineage columns
        bronze = _rows(_section(dictionary, f"bronze/{name}"))
        assert list(bronze)[:len(source)] == source, (name, list(bronze))  # file order
        assert set(bronze) - set(source) == {"_corrupt_record", *LINEAGE}, (name, list(bronze))
        for c in source:
            expect(f"bronze/{name}", c, bronze, "string")
        # silver: the source columns typed, raw PII replaced, derived and lineage columns
        silver = _rows(_section(dictionary, f"silver/{name}"))
        for c in source:
            if c not in RAW_PII:
                expect(f"silver/{name}", c, silver, contract_type(name, c))
        for c, t in SILVER_DERIVED.get(name, {}).items():
            expect(f"silver/{name}", c, silver, t)
        for c in LINEAGE:
            expect(f"silver/{name}", c, silver)
        problems += [f"silver/{name}: raw PII column {c}" for c in RAW_PII & set(silver)]
        # quarantine: raw values (PII encrypted), the sorted reasons, the lineage columns
        quarantine = _rows(_section(dictionary, f"quarantine/{name}"))
        for c in source:
            if c in RAW_PII:
                if c in quarantine or not any(k.startswith(c) and r[4] == "encrypted" for k, r in quarantine.items()):
                    problems.append(f"quarantine/{name}: {c} not (only) encrypted")
            else:
                expect(f"quarantine/{name}", c, quarantine, "string")
        expect(f"quarantine/{name}", "_reasons", quarantine, "array<string>")
        for c in LINEAGE:
            expect(f"quarantine/{name}", c, quarantine)
    for name, columns in GOLD_COLUMNS.items():
        gold = _rows(_section(dictionary, f"gold/{name}"))
        if list(gold) != columns:
            problems.append(f"gold/{name}: columns {list(gold)}, contract {columns}")
        problems += [f"gold/{name}: raw PII column {c}" for c in RAW_PII & set(gold)]
    fact = _rows(_section(dictionary, "gold/fact_orders"))
    for c, t in FACT_ORDERS_TYPES.items():
        expect("gold/fact_orders", c, fact, t)
    assert not problems, "\n".join(problems)


def test_dictionary_facts_of_hand_checked_columns(dictionary):
    # PII flags, constraints and upstream columns of a few hand-checked columns
    assert _row(_section(dictionary, "bronze/customers"), "email")[4] == "raw (email)"
    assert _row(_section(dictionary, "silver/customers"), "email_hash")[4] == "hashed"
    assert _row(_section(dictionary, "silver/customers"), "email_enc")[4] == "encrypted"
    assert _row(_section(dictionary, "gold/customer_360"), "email_hash")[4] == "hashed"
    assert _row(_section(dictionary, "gold/customer_360"), "revenue_usd")[6] == \
        "gold/fact_orders.amount_usd, gold/fact_orders.is_revenue"
    # upstream columns the contract's definitions imply (section 5)
    implied = {
        ("gold/fact_orders", "final_status"): {"silver/order_events.event_type", "silver/orders.status"},
        ("gold/fact_orders", "amount_usd"): {"silver/orders.amount_usd"},
        ("gold/customer_360", "total_sessions"): {"silver/behavior.session_id"},
        ("gold/customer_360", "open_pipeline_usd"): {"silver/opportunities.amount_usd"},
        ("gold/product_performance_daily", "returned_units"): {"gold/fact_orders.final_status"},
        ("gold/revenue_by_industry", "industry"): {"gold/customer_360.industry"},
        ("silver/behavior", "urls"): {"bronze/behavior.url_1", "bronze/behavior.url_2"},
    }
    for (table, column), upstream in implied.items():
        documented = set(_row(_section(dictionary, table), column)[6].split(", "))
        assert upstream <= documented, (table, column, documented)
    orders_id = _row(_section(dictionary, "silver/orders"), "order_id")
    assert "primary key" in orders_id[3] and orders_id[2] == "no"
    assert "`orphan_customer`" in _section(dictionary, "silver/orders")
    # raw PII is only in bronze: silver, quarantine and gold hold hashes, ciphertext or derivations
    tables = [f"{layer}/{ds.name}" for layer in ("silver", "quarantine") for ds in DATASETS]
    tables += [f"gold/{t}" for t in GOLD_TABLES]
    for table in tables:
        rows = _rows(_section(dictionary, table))
        assert rows, table
        raw = [c for c, r in rows.items() if r[4].startswith("raw")]
        assert not raw, (table, raw)


def test_models_agree_with_the_published_plans(dictionary):
    """The Pandera models (etl_assets/schemas.py) declare exactly the columns and types that the
    assets' Spark plans publish."""
    assert docs._pandera_models(), "no Pandera model found"
    bad = [line for line in dictionary.splitlines() if "model type " in line or "not in the model" in line]
    assert not bad, "\n".join(bad)


def test_check_mode(tmp_path, spark, dictionary):
    out = tmp_path / "dd.md"
    out.write_text("# stale\n")
    assert docs.main(["--check", "--out", str(out)]) == 1
    assert docs.main(["--out", str(out)]) == 0
    assert out.read_text() == dictionary
    assert docs.main(["--check", "--out", str(out)]) == 0


# -- asset facts -------------------------------------------------------------------------------


def _specs():
    from etl_assets import defs

    graph = defs.get_repository_def().asset_graph
    return {tuple(k.path): graph.get(k) for k in graph.get_all_asset_keys()}


def test_every_asset_has_facts():
    nodes = _specs()
    assert len(nodes) >= len(DATASETS) * 4 + len(GOLD_TABLES)  # raw, bronze, silver, quarantine, gold
    for key, node in nodes.items():
        name = "/".join(key)
        assert node.description and len(node.description) > 20, name
        assert node.owners, name
        assert node.kinds, name
        tags = node.tags
        assert tags.get("layer") in ("raw", "bronze", "silver", "quarantine", "gold"), (name, tags)
        assert tags.get("pii") in ("yes", "no"), (name, tags)
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", tags.get("source_system", "")), (name, tags)
        refs = node.metadata["dagster/code_references"].code_references
        assert refs, name
        for ref in refs:
            assert isinstance(ref, LocalFileCodeReference), (name, ref)
            path = Path(ref.file_path)
            assert path.is_file() and REPO in path.parents, (name, ref)
            assert 1 <= ref.line_number <= len(path.read_text().splitlines()), (name, ref)
        labels = {r.label for r in refs}
        if key[0] != "raw":
            assert "asset definition" in labels, (name, labels)
        if key[0] != "gold" or key[-1] in GOLD_TABLES:
            assert any(lbl and lbl.startswith(("registry:", "transform:")) for lbl in labels), (name, labels)
    # pii=yes exactly where the registry says so
    for ds in DATASETS:
        assert nodes[("silver", ds.name)].tags["pii"] == ("yes" if ds.has_pii else "no")
        assert nodes[("silver", ds.name)].tags["source_system"] == ds.system


def test_code_references_link_to_git(monkeypatch):
    from etl_assets.assets.factory import RAW_SPECS, SILVER_ASSETS

    monkeypatch.setenv("ETL_CODE_REFERENCES_GIT_URL", "https://git.example.com/acme/etl")
    monkeypatch.setenv("ETL_CODE_REFERENCES_GIT_BRANCH", "release")
    monkeypatch.setenv("ETL_CODE_REFERENCES_GIT_PLATFORM", "github")  # a self-hosted host name
    out = docs.with_code_references([RAW_SPECS[0], SILVER_ASSETS[0]])
    spec = out[0]
    assert isinstance(spec, AssetSpec)
    refs = spec.metadata["dagster/code_references"].code_references
    assert all(isinstance(r, UrlCodeReference) for r in refs)
    assert refs[0].url.startswith("https://git.example.com/acme/etl/tree/release/etl_assets/registry.py#L")
    silver_refs = out[1].specs_by_key[AssetKey(["silver", DATASETS[0].name])].metadata["dagster/code_references"]
    assert any("etl_assets/transforms/silver.py#L" in r.url for r in silver_refs.code_references)
