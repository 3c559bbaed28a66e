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


def test_dictionary_covers_every_table_and_column(spark, dictionary):
    lineage, types = docs.derived_lineage(spark)
    tables = [f"{layer}/{ds.name}" for layer in ("bronze", "silver", "quarantine") for ds in DATASETS]
    tables += [f"gold/{t}" for t in GOLD_TABLES]
    for table in tables:
        section = _section(dictionary, table)
        for column, spark_type in types.get(table, []):
            row = _row(section, column)
            assert row[1] == spark_type, (table, column, row)
            if table in lineage and lineage[table][column]:
                for t, c in lineage[table][column]:
                    assert f"{t}.{c}" in row[6], (table, column, row)
    # PII flags, constraints and upstream columns of a few hand-checked columns
    assert _row(_section(dictionary, "bronze/customers"), "email")[4] == "raw (email)"
    assert _row(_section(dictionary, "silver/customers"), "email_hash")[4] == "hashed"
    assert _row(_section(dictionary, "silver/customers"), "email_enc")[4] == "encrypted"
    assert _row(_section(dictionary, "gold/customer_360"), "email_hash")[4] == "hashed"
    assert _row(_section(dictionary, "gold/customer_360"), "revenue_usd")[6] == \
        "gold/fact_orders.amount_usd, gold/fact_orders.is_revenue"
    orders_id = _row(_section(dictionary, "silver/orders"), "order_id")
    assert "primary key" in orders_id[3] and orders_id[2] == "no"
    assert "`orphan_customer`" in _section(dictionary, "silver/orders")
    # raw PII is only in bronze: silver, quarantine and gold hold hashes, ciphertext or derivations
    for table in tables:
        if not table.startswith("bronze/"):
            pii = [_row(_section(dictionary, table), c)[4] for c, _ in types.get(table, [])]
            assert not [p for p in pii if p.startswith("raw")], (table, pii)


def test_models_agree_with_the_published_plans(dictionary):
    """Where the Pandera models (etl_assets/schemas.py) exist, the columns and types they declare
    are exactly those the assets' Spark plans publish."""
    if not docs._pandera_models():
        pytest.skip("etl_assets.schemas is not there yet")
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
