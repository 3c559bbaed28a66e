"""Raw, bronze, silver and quarantine assets for every dataset, generated from the registry."""


import time

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from pyspark import StorageLevel

from etl_assets.registry import DATASETS, Dataset
from etl_assets.resources import PlatformResource, SparkResource
from etl_assets.transforms.bronze import read_bronze
from etl_assets.transforms.silver import classify, outcome_counts, quarantine_frame, silver_frame


def raw_key(ds: Dataset) -> AssetKey:
    return AssetKey(["raw", ds.system, ds.name])


def table_key(layer: str, name: str) -> AssetKey:
    return AssetKey([layer, name])


def _tags(layer: str, ds: Dataset | None = None, pii: bool = False) -> dict[str, str]:
    tags = {"layer": layer, "pii": "yes" if pii else "no"}
    if ds is not None:
        tags["source_system"] = ds.system
    return tags


def publish_metadata(lake, layer: str, table: str, stats: dict, rows: int, started: float) -> dict:
    seconds = max(time.monotonic() - started, 1e-6)
    return {
        "dagster/row_count": rows,
        "dagster/uri": MetadataValue.path(lake.path(layer, table)),
        "bytes_written": stats["bytes"],
        "files_written": stats["files"],
        "duration_s": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1),
    }


def raw_spec(ds: Dataset) -> AssetSpec:
    return AssetSpec(
        key=raw_key(ds),
        description=f"Files landed by {ds.system} under `{ds.landing_prefix}/dt=YYYY-MM-DD/*{ds.ext}`. "
        + ds.description,
        group_name="raw",
        kinds={ds.format, "file"},
        owners=[ds.owner],
        tags=_tags("raw", ds, ds.has_pii),
    )


def bronze_asset(ds: Dataset):
    @asset(
        key=table_key("bronze", ds.name),
        deps=[raw_key(ds)],
        group_name="bronze",
        kinds={"spark", "parquet"},
        owners=[ds.owner],
        tags=_tags("bronze", ds, ds.has_pii),
        description=f"Every delivered {ds.name} row as strings, with lineage columns "
        "(_source_file, _dt, _ingested_at, _run_id, _corrupt_record). Nothing is dropped.",
    )
    def _bronze(context: AssetExecutionContext, spark: SparkResource, platform: PlatformResource):
        started = time.monotonic()
        session = spark.get_session()
        read = read_bronze(session, ds, platform.landing, context.run_id)
        stats = platform.lake.publish(read.df, "bronze", ds.name)
        rows = platform.lake.read(session, "bronze", ds.name).count()
        for d in read.drift:
            context.log.warning(f"schema drift in {d.describe()}")
        meta = publish_metadata(platform.lake, "bronze", ds.name, stats, rows, started)
        meta.update(
            {
                "source_files": len(read.files),
                "empty_files_skipped": len(read.skipped),
                "schema_drift_files": len(read.drift),
            }
        )
        if read.drift:
            meta["schema_drift"] = MetadataValue.md("\n".join(f"- {d.describe()}" for d in read.drift))
        return MaterializeResult(metadata=meta)

    return _bronze


def silver_asset(ds: Dataset):
    silver, quarantine = table_key("silver", ds.name), table_key("quarantine", ds.name)
    deps = [table_key("bronze", ds.name)] + [table_key("silver", t) for t in ds.upstream_silver]

    @multi_asset(
        name=f"silver_{ds.name}",
        specs=[
            AssetSpec(
                silver,
                deps=deps,
                group_name="silver",
                kinds={"spark", "parquet"},
                owners=[ds.owner],
                tags=_tags("silver", ds, ds.has_pii),
                description=f"Current, typed, validated {ds.name}: one row per "
                f"{', '.join(ds.key)}; PII hashed/encrypted. " + ds.description,
            ),
            AssetSpec(
                quarantine,
                deps=deps,
                group_name="silver",
                kinds={"spark", "parquet"},
                owners=[ds.owner],
                tags=_tags("quarantine", ds, ds.has_pii),
                description=f"{ds.name} rows failing a row rule or a reference, raw values "
                "(PII encrypted), with the sorted array of every reason in `_reasons`.",
            ),
        ],
    )
    def _silver(context: AssetExecutionContext, spark: SparkResource, platform: PlatformResource):
        started = time.monotonic()
        session = spark.get_session()
        lake, pii = platform.lake, platform.pii
        bronze = lake.read(session, "bronze", ds.name)
        targets = {r.target: lake.read(session, "silver", r.target) for r in ds.references}
        fx = lake.read(session, "silver", "rates") if "rates" in ds.upstream_silver else None
        known = [r[0] for r in fx.select("quote_ccy").distinct().collect()] if fx is not None else []
        classified = classify(bronze, ds, targets, fx, known).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = outcome_counts(classified, ds)
            if not counts.conserved:
                raise RuntimeError(f"conservation violated for {ds.name}: {counts}")
            s_stats = lake.publish(silver_frame(classified, ds, pii), "silver", ds.name)
            q_stats = lake.publish(quarantine_frame(classified, ds, pii), "quarantine", ds.name)
        finally:
            classified.unpersist()
        conservation = {
            "bronze_rows": counts.bronze_rows,
            "duplicate_row": counts.duplicate_row,
            "quarantined": counts.quarantined,
            "superseded": counts.superseded,
            "silver_rows": counts.silver_rows,
        }
        per_reason = {f"quarantined_{r}": n for r, n in counts.reasons.items()}
        pass_rate = counts.silver_rows / max(counts.bronze_rows - counts.duplicate_row - counts.superseded, 1)
        s_meta = publish_metadata(lake, "silver", ds.name, s_stats, counts.silver_rows, started)
        s_meta.update(conservation)
        s_meta.update(per_reason)
        s_meta["pass_rate"] = round(pass_rate, 6)
        if counts.invalid_json_nulled:
            s_meta["invalid_json_nulled"] = counts.invalid_json_nulled
        q_meta = publish_metadata(lake, "quarantine", ds.name, q_stats, counts.quarantined, started)
        q_meta.update(per_reason)
        q_meta["quarantine_reasons"] = MetadataValue.json(counts.reasons)
        yield MaterializeResult(asset_key=silver, metadata=s_meta)
        yield MaterializeResult(asset_key=quarantine, metadata=q_meta)

    return _silver


RAW_SPECS = [raw_spec(ds) for ds in DATASETS]
BRONZE_ASSETS = [bronze_asset(ds) for ds in DATASETS]
SILVER_ASSETS = [silver_asset(ds) for ds in DATASETS]
