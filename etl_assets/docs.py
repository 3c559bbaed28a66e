"""The data dictionary (``make docs`` -> ``docs/data_dictionary.md``) and asset facts.

The dictionary is generated, never edited by hand, from:

- the dataset registry (``etl_assets/registry.py``): sources, keys, versions, owners, PII;
- the Pandera models (``etl_assets/schemas.py``, ``TABLE_SCHEMAS`` keyed by ``layer/table``)
  when that module is importable: types, nullability, constraints, descriptions;
- the column lineage derived from the Spark plans (``etl_assets/lineage.py``) of the very
  functions the assets run. No data and no Spark job is needed: each bronze table is an empty
  folder read with its schema, each silver/quarantine/gold DataFrame is built from those
  exactly as the assets build it, and its schema becomes the (empty) input of the next layer.

``python -m etl_assets.docs --check`` exits 1 when the checked-in file is stale
(``etl_assets_tests/test_docs.py`` does the same).

Asset facts: ``with_code_references`` adds code references (the asset's function, its registry
entry, the transform it runs) to every asset; with ``ETL_CODE_REFERENCES_GIT_URL`` set (for
example ``https://github.com/acme/etl``; branch ``ETL_CODE_REFERENCES_GIT_BRANCH``, default
``main``; ``ETL_CODE_REFERENCES_GIT_PLATFORM`` = ``github`` or ``gitlab`` when the URL does not
name one) they become links to the source in git.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import os
import sys
import tempfile
import warnings
from pathlib import Path

from etl_assets.registry import (
    CORRUPT_COLUMN,
    DATASETS,
    GOLD_TABLES,
    LINEAGE_COLUMNS,
    Dataset,
    silver_build_order,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "docs" / "data_dictionary.md"
LAYERS = ("bronze", "silver", "quarantine", "gold")

COLUMN_DOCS = {
    "_source_file": "Landed file the row came from",
    "_dt": "Delivery date (the `dt=` folder)",
    "_ingested_at": "When bronze ingested the row (UTC)",
    "_run_id": "Dagster run that ingested the row",
    CORRUPT_COLUMN: "Raw text of a line that could not be parsed, else null",
    "_reasons": "Sorted array of every failing rule or reference",
    "order_date": "UTC date of `order_ts`",
    "amount_usd": "`amount` / the as-of FX rate, half-up to cents (USD: `amount`)",
    "urls": "Array of the non-null `url_1`, `url_2`",
}


# -- quarantine reasons (also the zero-filled per-reason metrics of the assets) --------------


def quarantine_reasons(ds: Dataset) -> list[str]:
    """Every reason a row of ``ds`` can be quarantined for (needs a Spark session: the rule
    conditions are Spark columns)."""
    from etl_assets.transforms.silver import rule_checks

    reasons = {reason for _, reason in rule_checks(ds, [])}
    reasons |= {r.reason for r in ds.references}
    reasons.add("malformed_record")
    if ds.fx_date_column:
        reasons.add("missing_fx_rate")
    return sorted(reasons)


def reason_metrics(ds: Dataset, counts: dict[str, int]) -> dict[str, int]:
    """``quarantined_<reason>`` for every known reason of ``ds`` (0 when none), so every
    reason is a continuous series in the UI's plots."""
    try:
        known = quarantine_reasons(ds)
    except Exception:  # pragma: no cover - metrics never fail a materialization
        known = []
    return {f"quarantined_{r}": int(counts.get(r, 0)) for r in sorted(set(known) | set(counts))}


def source_system_tag(deps, gold_deps: dict) -> str:
    """The ``source_system`` tag of a derived table: its source systems, transitively through
    its (layer, table) ``deps`` (gold tables resolved through ``gold_deps``), joined by ``-``."""
    by_name = {d.name: d for d in DATASETS}
    systems: set[str] = set()
    pending, done = list(deps), set()
    while pending:
        layer, table = pending.pop()
        if (layer, table) in done:
            continue
        done.add((layer, table))
        if layer == "gold":
            pending += list(gold_deps.get(table, []))
        elif table in by_name:
            systems.add(by_name[table].system)
            pending += [("silver", t) for t in by_name[table].upstream_silver]
    return "-".join(sorted(systems)) or "none"


# -- code references ------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _registry_lines() -> dict[str, int]:
    path = REPO_ROOT / "etl_assets" / "registry.py"
    out = {}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        s = line.strip()
        if s.startswith('name="') and s.endswith('",'):
            out.setdefault(s[len('name="'):-2], i)
    return out


def _function_ref(fn, label: str):
    from dagster import LocalFileCodeReference

    return LocalFileCodeReference(
        file_path=str(Path(inspect.getsourcefile(fn)).resolve()), line_number=inspect.getsourcelines(fn)[1], label=label
    )


def _extra_references(key) -> list:
    from dagster import LocalFileCodeReference

    from etl_assets.transforms import bronze as B
    from etl_assets.transforms import gold as G
    from etl_assets.transforms import silver as S

    layer, name = key.path[0], key.path[-1]
    refs = []
    line = _registry_lines().get(name)
    if line:
        refs.append(
            LocalFileCodeReference(
                file_path=str(REPO_ROOT / "etl_assets" / "registry.py"), line_number=line, label=f"registry: {name}"
            )
        )
    if layer == "bronze":
        refs.append(_function_ref(B.read_bronze, "transform: read_bronze"))
    elif layer in ("silver", "quarantine"):
        refs.append(_function_ref(S.classify, "transform: classify"))
        fn = S.silver_frame if layer == "silver" else S.quarantine_frame
        refs.append(_function_ref(fn, f"transform: {fn.__name__}"))
    elif layer == "gold" and hasattr(G, name):
        refs.append(_function_ref(getattr(G, name), f"transform: {name}"))
    return refs


def _add_references(spec):
    from dagster import CodeReferencesMetadataValue

    existing = spec.metadata.get("dagster/code_references")
    current = list(existing.code_references) if existing is not None else []
    for ref in current:  # label the asset's own function
        if getattr(ref, "label", None) is None and hasattr(ref, "file_path"):
            current[current.index(ref)] = ref.model_copy(update={"label": "asset definition"})
    refs = current + _extra_references(spec.key)
    if not refs:
        return spec
    return spec.replace_attributes(
        metadata={**spec.metadata, "dagster/code_references": CodeReferencesMetadataValue(code_references=refs)}
    )


def with_code_references(assets: list) -> list:
    """Code references on every asset: its function (``with_source_code_references``), its
    registry entry and its transform; git links when ``ETL_CODE_REFERENCES_GIT_URL`` is set."""
    from dagster import AnchorBasedFilePathMapping, AssetsDefinition, AssetSpec, BetaWarning
    from dagster import link_code_references_to_git, with_source_code_references

    with warnings.catch_warnings():  # code references are a beta API: no warning per asset at load
        warnings.simplefilter("ignore", BetaWarning)
        out = []
        for a in with_source_code_references(list(assets)):
            if isinstance(a, AssetSpec):
                a = _add_references(a)
            elif isinstance(a, AssetsDefinition):
                a = a.map_asset_specs(_add_references)
            out.append(a)
        url = os.environ.get("ETL_CODE_REFERENCES_GIT_URL", "").strip().rstrip("/")
        if url:
            branch = os.environ.get("ETL_CODE_REFERENCES_GIT_BRANCH", "main").strip() or "main"
            platform = os.environ.get("ETL_CODE_REFERENCES_GIT_PLATFORM", "").strip() or None
            out = list(
                link_code_references_to_git(
                    out,
                    git_url=url,
                    git_branch=branch,
                    platform=platform,
                    file_path_mapping=AnchorBasedFilePathMapping(
                        local_file_anchor=REPO_ROOT, file_anchor_path_in_repository=""
                    ),
                )
            )
            # Dagster links the assets' references only; the external (raw) specs' too:
            gitlab = (platform or ("gitlab" if "gitlab" in url else "github")) == "gitlab"
            base = f"{url}/-/tree/{branch}" if gitlab else f"{url}/tree/{branch}"
            out = [_spec_refs_to_git(a, base) if isinstance(a, AssetSpec) else a for a in out]
    return out


def _spec_refs_to_git(spec, base: str):
    from dagster import CodeReferencesMetadataValue, UrlCodeReference

    existing = spec.metadata.get("dagster/code_references")
    if existing is None:
        return spec
    refs = []
    for r in existing.code_references:
        if hasattr(r, "file_path"):
            rel = Path(r.file_path).resolve().relative_to(REPO_ROOT).as_posix()
            r = UrlCodeReference(url=f"{base}/{rel}" + (f"#L{r.line_number}" if r.line_number else ""), label=r.label)
        refs.append(r)
    return spec.replace_attributes(
        metadata={**spec.metadata, "dagster/code_references": CodeReferencesMetadataValue(code_references=refs)}
    )


# -- the plan frames --------------------------------------------------------------------------


def plan_frames(spark, lake_root: Path) -> dict[str, object]:
    """``"layer/table"`` -> the DataFrame the asset publishes, built from empty inputs read
    from ``lake_root`` (folders are created; no Spark job runs)."""
    from etl_assets.assets.gold import BUILDERS
    from etl_assets.transforms.bronze import bronze_schema
    from etl_assets.transforms.silver import Pii, classify, quarantine_frame, silver_frame

    pii = Pii(salt="docs", key="0" * 16)
    inputs: dict[str, object] = {}
    frames: dict[str, object] = {}

    def publish_empty(table: str, schema) -> None:
        path = lake_root / table
        path.mkdir(parents=True, exist_ok=True)
        inputs[table] = spark.read.schema(schema).parquet(str(path))

    for ds in DATASETS:
        publish_empty(f"bronze/{ds.name}", bronze_schema(ds))
    for ds in silver_build_order():
        targets = {r.target: inputs[f"silver/{r.target}"] for r in ds.references}
        fx = inputs["silver/rates"] if "rates" in ds.upstream_silver else None
        classified = classify(inputs[f"bronze/{ds.name}"], ds, targets, fx, [])
        for layer, fn in (("silver", silver_frame), ("quarantine", quarantine_frame)):
            df = fn(classified, ds, pii)
            frames[f"{layer}/{ds.name}"] = df
            publish_empty(f"{layer}/{ds.name}", df.schema)
    for name, build in BUILDERS.items():  # dependency order (fact_orders, customer_360, ...)
        df = build(inputs)
        frames[f"gold/{name}"] = df
        publish_empty(f"gold/{name}", df.schema)
    return frames


_DERIVED: dict = {}  # per SparkSession: the plans do not change within a process


def derived_lineage(spark) -> tuple[dict[str, dict[str, list]], dict[str, list[tuple[str, str]]]]:
    """(lineage per table, Spark schema per table) of every silver/quarantine/gold table."""
    key = id(spark)
    if key not in _DERIVED:
        _DERIVED[key] = _derive(spark)
    lineage, types = _DERIVED[key]
    return {t: {c: list(d) for c, d in cols.items()} for t, cols in lineage.items()}, dict(types)


def _derive(spark):
    from etl_assets.lineage import derive_lineage, lake_table_resolver

    with tempfile.TemporaryDirectory(prefix="etl-docs-") as tmp:
        root = Path(tmp)
        frames = plan_frames(spark, root)
        resolve = lake_table_resolver(str(root))
        lineage = {t: derive_lineage(df, resolve) for t, df in frames.items()}
        types = {t: [(f.name, f.dataType.simpleString()) for f in df.schema.fields] for t, df in frames.items()}
    for table, cols in lineage.items():  # a table's own previous version is not an upstream column
        for c in cols:
            cols[c] = [u for u in cols[c] if u[0] != table]
    return lineage, types


# -- Pandera models (optional) ---------------------------------------------------------------


def _pandera_models() -> dict:
    try:
        from etl_assets.schemas import TABLE_SCHEMAS
    except ModuleNotFoundError as e:
        if e.name in ("etl_assets.schemas",):
            return {}
        raise
    return dict(TABLE_SCHEMAS)


def _check_text(check) -> str:
    stats = getattr(check, "statistics", None) or {}
    name = getattr(check, "name", None) or str(check)
    symbols = {
        "greater_than_or_equal_to": ">=",
        "greater_than": ">",
        "less_than_or_equal_to": "<=",
        "less_than": "<",
        "equal_to": "=",
        "not_equal_to": "!=",
    }
    if name in symbols and stats:
        return f"{symbols[name]} {next(iter(stats.values()))}"
    if name == "isin":
        return "in {" + ", ".join(map(str, stats.get("allowed_values", []))) + "}"
    if name == "notin":
        return "not in {" + ", ".join(map(str, stats.get("forbidden_values", []))) + "}"
    if name == "str_matches":
        return f"matches `{stats.get('pattern')}`"
    if name == "in_range":
        return f"between {stats.get('min_value')} and {stats.get('max_value')}"
    if stats:
        return f"{name}(" + ", ".join(f"{k}={v}" for k, v in sorted(stats.items())) + ")"
    return name


def _model_columns(model) -> dict[str, dict]:
    """column -> {type, nullable, unique, checks, description} of a Pandera DataFrameModel."""
    schema = model.to_schema()
    out = {}
    for name, col in schema.columns.items():
        dtype = getattr(col, "dtype", None)
        spark_type = getattr(dtype, "type", None)
        out[name] = {
            "type": spark_type.simpleString() if hasattr(spark_type, "simpleString") else (str(dtype) if dtype else ""),
            "nullable": bool(getattr(col, "nullable", True)),
            "unique": bool(getattr(col, "unique", False)),
            "checks": [_check_text(c) for c in getattr(col, "checks", []) or []],
            "description": getattr(col, "description", None) or "",
        }
    return out


# -- rendering -------------------------------------------------------------------------------


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _gold_descriptions() -> dict[str, str]:
    from etl_assets.assets.gold import DESCRIPTIONS

    return dict(DESCRIPTIONS)


def _tables() -> list[tuple[str, str]]:
    tables = [(layer, ds.name) for layer in ("bronze", "silver", "quarantine") for ds in DATASETS]
    from etl_assets.assets.gold import BUILDERS

    gold = list(GOLD_TABLES) + [t for t in BUILDERS if t not in GOLD_TABLES]
    models = _pandera_models()
    gold += sorted(t.split("/", 1)[1] for t in models if t.startswith("gold/") and t.split("/", 1)[1] not in gold)
    return tables + [("gold", t) for t in gold]


def _pii_flag(layer: str, table: str, col: str, upstream: list, flags: dict) -> str:
    ds = next((d for d in DATASETS if d.name == table), None) if layer != "gold" else None
    if ds is not None:
        raw = {c.name: c.pii for c in ds.columns if c.pii}
        if layer == "bronze" and col in raw:
            return "raw (email)" if raw[col] == "email" else "raw (dropped in silver)"
        if layer == "quarantine" and col.endswith("_enc") and (col[: -len("_enc")] in raw or col == CORRUPT_COLUMN + "_enc"):
            return "encrypted"
    inherited = [flags.get(u) for u in upstream if flags.get(u)]
    if not inherited:
        return ""
    if col.endswith("_hash"):
        return "hashed"
    if col.endswith("_enc"):
        return "encrypted"
    if col.endswith("_domain"):
        return "derived (domain only)"
    if all(f == "hashed" for f in inherited):
        return "hashed"
    return "derived"


def render(spark) -> str:
    """The whole data dictionary as Markdown (deterministic)."""
    lineage, plan_types = derived_lineage(spark)
    models = _pandera_models()
    gold_docs = _gold_descriptions()
    flags: dict[tuple[str, str], str] = {}
    out: list[str] = []
    w = out.append

    w("# Data dictionary")
    w("")
    w("<!-- Generated by `make docs` (python -m etl_assets.docs). Do not edit: a test fails when it is stale. -->")
    w("")
    w("Every published table of the lake (`<lake>/<layer>/<table>/`, Delta Lake), generated from the dataset "
      "registry (`etl_assets/registry.py`), the Pandera models (`etl_assets/schemas.py`) and the column "
      "lineage derived from the Spark plans the assets run (`etl_assets/lineage.py`).")
    w("")
    w("- **type**: the Spark type published (from the plan); **null**: `no` when the model forbids nulls.")
    w("- **constraints**: the Pandera model's checks and keys (silver rows failing a rule are quarantined "
      "instead, see each dataset's quarantine reasons).")
    w("- **PII**: `raw` only in bronze; silver and gold hold hashes (`hashed`, salted SHA-256), "
      "encrypted values (`encrypted`, AES-GCM) or values derived from PII.")
    w("- **upstream columns**: `layer/table.column` whose values flow into the column (filter- and "
      "join-only columns excluded; counts depend on the keys they count per), derived automatically "
      "from the Spark logical plan, the same lineage the Dagster UI shows.")
    w("")
    w("## Tables")
    w("")
    w("| table | description | owner | key |")
    w("| --- | --- | --- | --- |")
    by_name = {d.name: d for d in DATASETS}
    from etl_assets.assets.gold import OWNER as GOLD_OWNER

    def table_facts(layer: str, table: str) -> tuple[str, str, str]:
        if layer == "gold":
            key = ""
            try:
                from etl_assets.schemas import PRIMARY_KEYS

                key = ", ".join(PRIMARY_KEYS.get(f"gold/{table}", ()))
            except ImportError:
                pass
            return gold_docs.get(table, (models[f"gold/{table}"].__doc__ or "").strip() if f"gold/{table}" in models else ""), GOLD_OWNER, key
        ds = by_name[table]
        desc = {
            "bronze": f"Every delivered {ds.system}/{ds.name} row, values as text. {ds.description}",
            "silver": f"Current, typed, validated rows. {ds.description}",
            "quarantine": "Rows failing a row rule or a reference, raw values, with `_reasons`.",
        }[layer]
        return desc, ds.owner, (", ".join(ds.key) if layer == "silver" else "")

    tables = _tables()
    for layer, table in tables:
        desc, owner, key = table_facts(layer, table)
        anchor = f"{layer}{table}"  # GitHub: "/" dropped, "_" kept
        w(f"| [{layer}/{table}](#{anchor}) | {_md(desc)} | {owner} | {key} |")
    w("")

    for layer in LAYERS:
        w(f"## {layer}")
        w("")
        for lay, table in tables:
            if lay != layer:
                continue
            name = f"{layer}/{table}"
            desc, owner, key = table_facts(layer, table)
            w(f"### {name}")
            w("")
            w(_md(desc))
            w("")
            facts = [f"owner `{owner}`"]
            ds = by_name.get(table) if layer != "gold" else None
            if ds is not None:
                facts.append(f"source `{ds.system}/{ds.name}` ({ds.format})")
                if layer == "silver":
                    facts.append(f"key `{', '.join(ds.key)}`")
                    facts.append(f"version `{ds.version}`" if ds.version else "no version column (earliest delivery wins)")
                facts.append(f"PII {'yes' if ds.has_pii else 'no'}")
            if key and layer == "gold":
                facts.append(f"key `{key}`")
            upstream_tables = sorted({u[0] for deps in lineage.get(name, {}).values() for u in deps})
            if layer == "bronze" and ds is not None:
                upstream_tables = [f"raw/{ds.system}/{ds.name}"]
            if upstream_tables:
                facts.append("upstream " + ", ".join(f"`{t}`" for t in upstream_tables))
            w(" · ".join(facts))
            w("")
            if layer == "silver" and ds is not None:
                w("Quarantine reasons: " + ", ".join(f"`{r}`" for r in quarantine_reasons(ds)) + ".")
                w("")
            model = _model_columns(models[name]) if name in models else {}
            if name in plan_types:
                columns = [c for c, _ in plan_types[name]]
                types = dict(plan_types[name])
            elif model:
                columns = list(model)
                types = {c: m["type"] for c, m in model.items()}
            else:  # bronze without a model
                from etl_assets.transforms.bronze import bronze_schema

                columns = [f.name for f in bronze_schema(ds).fields]
                types = {f.name: f.dataType.simpleString() for f in bronze_schema(ds).fields}
            keys = set(key.split(", ")) if key else set()
            w("| column | type | null | constraints | PII | description | upstream columns |")
            w("| --- | --- | --- | --- | --- | --- | --- |")
            for col in columns:
                m = model.get(col, {})
                constraints = []
                if col in keys:
                    constraints.append("primary key" if len(keys) == 1 else "part of the key")
                if m.get("unique") and col not in keys:
                    constraints.append("unique")
                constraints += m.get("checks", [])
                if model and m.get("type") and m["type"] != types.get(col):
                    constraints.append(f"model type {m['type']}")
                if model and not m:
                    constraints.append("not in the model")
                null = ("no" if not m["nullable"] else "yes") if m else ""
                if ds is not None and layer == "bronze":
                    upstream = [(f"raw/{ds.system}/{ds.name}", col)] if col in ds.source_columns else []
                else:
                    upstream = [tuple(u) for u in lineage.get(name, {}).get(col, [])]
                pii = _pii_flag(layer, table, col, upstream, flags)
                if pii:
                    flags[(name, col)] = pii
                description = m.get("description") or ""
                if not description and ds is not None and col in ds.source_columns:
                    description = ds.column(col).description
                description = description or COLUMN_DOCS.get(col, "")
                if upstream:
                    up = ", ".join(f"{t}.{c}" for t, c in upstream)
                elif layer == "bronze":
                    up = "(ingestion)" if col in LINEAGE_COLUMNS or col == CORRUPT_COLUMN else ""
                elif name not in plan_types:
                    up = "(not built from a Spark plan)"
                else:
                    up = "(constant)"
                w(f"| `{col}` | {types.get(col, '')} | {null} | {_md('; '.join(constraints))} | {pii} | "
                  f"{_md(description)} | {_md(up)} |")
            w("")
    return "\n".join(out).rstrip() + "\n"


def _session():
    os.environ.setdefault("ETL_SPARK_LOG_LEVEL", "ERROR")
    from etl_assets.resources import SparkResource

    return SparkResource(master="local[1]", shuffle_partitions=1, driver_memory="1g").get_session()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the data dictionary (docs/data_dictionary.md).")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output file (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale instead of writing it")
    args = parser.parse_args(argv)
    text = render(_session())
    out = Path(args.out)
    if args.check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            print(f"{out} is stale: run `make docs`", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
