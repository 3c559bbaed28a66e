"""Raw, bronze, silver and quarantine assets for every dataset, generated from the registry."""


import contextlib
import time

from dagster import (
    AssetExecutionContext,
    Backoff,
    Failure,
    Jitter,
    RetryPolicy,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    AssetCheckResult,
    asset,
    asset_check,
    multi_asset,
)
from pyspark import StorageLevel

from etl_assets import audit, checks
from etl_assets.checks import PublishCheck, QualityGateError
from etl_assets.registry import DATASETS, Dataset
from etl_assets.schemas import column_schema
from etl_assets.storage import LandingError
from etl_assets.transforms.bronze import Drift, file_drift
from etl_assets.resources import PlatformResource, SparkResource
from etl_assets.ingest import BronzeConfig, IngestConfigError, ingest_bronze, unreadable_files
from etl_assets.lake import LakeLockTimeout, LakeTableError, Write
from etl_assets.transforms.silver import classify, known_currencies, outcome_counts, quarantine_frame, silver_frame
from etl_assets.docs import reason_metrics
from etl_assets.lineage import column_lineage_metadata


def raw_key(ds: Dataset) -> AssetKey:
    return AssetKey(["raw", ds.system, ds.name])


def table_key(layer: str, name: str) -> AssetKey:
    return AssetKey([layer, name])


def _tags(layer: str, ds: Dataset | None = None, pii: bool = False) -> dict[str, str]:
    tags = {"layer": layer, "pii": "yes" if pii else "no"}
    if ds is not None:
        tags["source_system"] = ds.system
    return tags


# Transient failures (a lost Spark executor or driver connection, S3 or network errors) are
# retried by Dagster with back-off; failures that a retry cannot fix are raised by step_guard
# as Failure(allow_retries=False), so they fail at once with their message.
RETRY_POLICY = RetryPolicy(max_retries=2, delay=15, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
PERMANENT_ERRORS = (QualityGateError, LandingError, IngestConfigError, LakeLockTimeout, LakeTableError)


@contextlib.contextmanager
def step_guard(context, platform, writes: list[tuple[str, str]], reads: list[tuple[str, str]] = ()):
    """Around every step that publishes: the lake locks of the tables it writes (exclusive) and
    reads (shared), held until it has published, and no retry for a permanent failure."""
    names = lambda tables: ", ".join("/".join(t) for t in tables) or "-"  # noqa: E731
    try:
        with platform.lake.step_lock(writes=writes, reads=reads, logger=context.log, owner=f"run {context.run_id}"):
            context.log.debug(f"lake locks acquired: write {names(writes)}; read {names(reads)}")
            try:
                yield
            finally:
                context.log.debug(f"lake locks released: write {names(writes)}")
    except PERMANENT_ERRORS as e:
        raise Failure(description=f"{type(e).__name__}: {e}", allow_retries=False) from e


def writer_pool(layer: str, table: str) -> str:
    """The Dagster pool of the step that writes ``layer/table`` (silver's step writes quarantine
    too). With ``pools: default_limit: 1`` in the instance (prod), one Dagster instance never runs
    two writers of a table at once: on an S3 lake there is no ``flock`` (see etl_assets/lake.py)."""
    return f"lake-{layer}-{table}"


def publish_metadata(lake, layer: str, table: str, stats: dict, rows: int, started: float) -> dict:
    seconds = max(time.monotonic() - started, 1e-6)
    return {
        "dagster/row_count": rows,
        "dagster/uri": MetadataValue.path(lake.path(layer, table)),
        "delta_version": stats["version"],
        "delta_operation": stats["operation"],
        "bytes_written": stats["bytes"],
        "files_written": stats["files"],
        "bytes_removed": stats["bytes_removed"],
        "files_removed": stats["files_removed"],
        "duration_s": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1),
    }


def silver_check_specs(key: AssetKey) -> list:
    return [
        checks.spec(key, checks.SCHEMA, "Pandera model: columns, types, nullability, constraints", blocking=True),
        checks.spec(key, checks.PRIMARY_KEY, "One row per primary key", blocking=True),
        checks.spec(key, checks.CONSERVATION, "bronze rows (the published bronze table) = duplicate + superseded "
                    "(the classification) + silver + quarantined rows (as written)", blocking=True),
        checks.spec(key, checks.QUARANTINE_RATE, "Quarantined share within the dq.yaml thresholds (WARN/ERROR)", blocking=True),
        checks.spec(key, checks.VOLUME, "Row count near the median of recent materializations (WARN)"),
    ]


def quarantine_check_specs(key: AssetKey) -> list:
    return [
        checks.spec(key, checks.SCHEMA, "Pandera model: raw values, encrypted PII, lineage, reasons", blocking=True),
        checks.spec(key, checks.VOLUME, "Row count near the median of recent materializations (WARN)"),
    ]


def bronze_check_specs(key: AssetKey) -> list:
    return [
        checks.spec(key, checks.READABLE, "Every landed file could be read: names rejected files (unreadable "
                    "content) and refused keys (unsafe keys, links); ERROR, the other files still publish"),
        checks.spec(key, checks.VOLUME, "Row count near the median of recent materializations (WARN)"),
    ]


def bronze_rows(lake, ds: Dataset) -> int:
    """Rows of the published bronze table, from the Delta log's file statistics (no data scan).

    No lineage check here: ingest sets ``_source_file``/``_dt``/``_ingested_at``/``_run_id`` on
    every row itself, so a check of them could not fail; the unit tests cover that code
    (test_checks.py::test_bronze_lineage_columns_name_file_day_and_run)."""
    return lake.rows("bronze", ds.name)


def raw_drift_check(ds: Dataset):
    """Schema drift of the landed files (WARN naming each file and its columns), without Spark."""

    @asset_check(
        asset=raw_key(ds),
        name=checks.DRIFT,
        description="Landed files whose columns differ from the contract: extra, missing or retyped (WARN)",
    )
    def _drift(platform: PlatformResource) -> AssetCheckResult:
        store = platform.landing
        found = []
        for f in store.dataset_files(ds):
            try:
                d = file_drift(ds, store, f)
            except LandingError as e:
                d = Drift(file=f.uri, error=str(e))
            if d:
                found.append(d)
        return checks.drift_outcome(found).to_result(raw_key(ds))

    return _drift


def gate(results: list[tuple[AssetKey, list]]):
    """The quality gate, run before publishing. Yields nothing when every ERROR check passes.
    Otherwise it yields every check result (so the UI shows what failed) and raises, so the
    step fails unpublished: readers keep the previous version, downstream assets do not run."""
    failures = [(k, o) for k, outs in results for o in outs if o.blocking_failure]
    if not failures:
        return
    for key, outs in results:
        for o in outs:
            yield o.to_result(key)
    summary = "; ".join(f"{'/'.join(k.path)}.{o.name}: {o.description}" for k, o in failures)
    raise QualityGateError(f"quality gate blocked publishing: {summary}")


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
        kinds={"spark", "delta"},
        owners=[ds.owner],
        tags=_tags("bronze", ds, ds.has_pii),
        description=f"Every delivered {ds.name} row as strings, with lineage columns "
        "(_source_file, _dt, _ingested_at, _run_id, _corrupt_record). Nothing is dropped. "
        "Run config `mode`: full (default) | incremental | days (+ `days`), see etl_assets/ingest.py.",
        output_required=False,  # incremental with nothing new: no materialization
        check_specs=bronze_check_specs(table_key("bronze", ds.name)),
        retry_policy=RETRY_POLICY,
        pool=writer_pool("bronze", ds.name),
    )
    def _bronze(
        context: AssetExecutionContext, config: BronzeConfig, spark: SparkResource, platform: PlatformResource
    ):
        with step_guard(context, platform, writes=[("bronze", ds.name)]):
            yield from _bronze_step(context, config, spark, platform)

    def _bronze_step(context, config: BronzeConfig, spark: SparkResource, platform: PlatformResource):
        started, started_at = time.monotonic(), audit.utcnow()
        session = spark.get_session()
        outcome = ingest_bronze(session, ds, platform.landing, platform.lake, context.run_id, config, context.log)
        unreadable = unreadable_files(platform.lake, platform.landing, ds)
        for uri, why in unreadable.items():
            context.log.error(f"not ingested: {why if why.startswith(uri) else f'{uri}: {why}'}")
        if outcome is None:
            # every landed object version is already in bronze: no materialization (nothing
            # downstream runs); the checks are evaluated again on the unchanged table
            key = table_key("bronze", ds.name)
            if platform.lake.exists("bronze", ds.name):
                rows = bronze_rows(platform.lake, ds)
                history = checks.row_count_history(context.instance, key)
                for o in (checks.volume_outcome(rows, history, ds.name), checks.readable_outcome(unreadable)):
                    yield o.to_result(key)
            return
        read, stats = outcome.read, outcome.stats
        checks_started = time.monotonic()
        rows = stats["rows"]  # the committed version's rows, from the Delta log
        checks_s = time.monotonic() - checks_started
        audit.record(context, platform.lake, "bronze", ds.name, rows, started_at)  # gold/audit_log
        meta_started = time.monotonic()
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
        if read.skipped:
            meta["empty_files"] = MetadataValue.json(read.skipped)
        if unreadable:
            meta["unreadable_files"] = MetadataValue.md("\n".join(f"- `{u}`: {w}" for u, w in unreadable.items()))
        meta.update(outcome.metadata())
        meta["dagster/column_schema"] = column_schema(f"bronze/{ds.name}")
        key = table_key("bronze", ds.name)
        metadata_s = time.monotonic() - meta_started
        checks_started = time.monotonic()
        results = [
            checks.volume_outcome(rows, checks.row_count_history(context.instance, key), ds.name),
            checks.readable_outcome(unreadable),
        ]
        meta["checks_duration_s"] = round(checks_s + time.monotonic() - checks_started, 3)
        meta["metadata_duration_s"] = round(metadata_s, 3)
        yield MaterializeResult(
            metadata=meta,
            data_version=DataVersion(outcome.log_digest[:32]),
            check_results=[o.to_result(key) for o in results],
        )

    return _bronze


def silver_asset(ds: Dataset):
    silver, quarantine = table_key("silver", ds.name), table_key("quarantine", ds.name)
    deps = [table_key("bronze", ds.name)] + [table_key("silver", t) for t in ds.upstream_silver]

    @multi_asset(
        name=f"silver_{ds.name}",
        retry_policy=RETRY_POLICY,
        pool=writer_pool("silver", ds.name),
        check_specs=silver_check_specs(silver) + quarantine_check_specs(quarantine),
        specs=[
            AssetSpec(
                silver,
                deps=deps,
                group_name="silver",
                kinds={"spark", "delta"},
                owners=[ds.owner],
                tags=_tags("silver", ds, ds.has_pii),
                automation_condition=AutomationCondition.eager(),  # follows new bronze data
                description=f"Current, typed, validated {ds.name}: one row per "
                f"{', '.join(ds.key)}; PII hashed/encrypted. " + ds.description,
            ),
            AssetSpec(
                quarantine,
                deps=deps,
                group_name="silver",
                kinds={"spark", "delta"},
                owners=[ds.owner],
                tags=_tags("quarantine", ds, ds.has_pii),
                automation_condition=AutomationCondition.eager(),
                description=f"{ds.name} rows failing a row rule or a reference, raw values "
                "(PII encrypted), with the sorted array of every reason in `_reasons`.",
            ),
        ],
    )
    def _silver(context: AssetExecutionContext, spark: SparkResource, platform: PlatformResource):
        reads = [("bronze", ds.name)] + [("silver", t) for t in ds.upstream_silver]
        with step_guard(context, platform, writes=[("silver", ds.name), ("quarantine", ds.name)], reads=reads):
            yield from _silver_step(context, spark, platform)

    def _silver_step(context, spark: SparkResource, platform: PlatformResource):
        started, started_at = time.monotonic(), audit.utcnow()
        session = spark.get_session()
        lake, pii = platform.lake, platform.pii
        bronze = lake.read(session, "bronze", ds.name)
        targets = {r.target: lake.read(session, "silver", r.target) for r in ds.references}
        fx = lake.read(session, "silver", "rates") if "rates" in ds.upstream_silver else None
        known = known_currencies(fx)
        classified = classify(bronze, ds, targets, fx, known).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            # the first action on the cached frame: computes the classification (which a write
            # would otherwise do) and every count, so it is not timed as checks
            counts = outcome_counts(classified, ds)
            s_df, q_df = silver_frame(classified, ds, pii), quarantine_frame(classified, ds, pii)
            # the Pandera checks of both frames are computed while they are staged, and the gate
            # runs on them before the two tables are swapped in (checks.PublishCheck)
            s_check, q_check = PublishCheck(s_df, f"silver/{ds.name}"), PublishCheck(q_df, f"quarantine/{ds.name}")
            # one transaction: silver and quarantine always come from the same run (conservation)
            writes = [Write(s_check.df, "silver", ds.name, pii=ds.pii_columns),
                      Write(q_check.df, "quarantine", ds.name, pii=ds.pii_columns)]
            with lake.transaction(writes, context.run_id) as staged:
                checks_started = time.monotonic()
                s_schema, q_schema = s_check.outcomes(staged.paths[0]), q_check.outcomes(staged.paths[1])
                written = lambda outs: next(o.metadata["rows_checked"] for o in outs if o.name == checks.SCHEMA)  # noqa: E731
                # each side counted on its own: bronze from the published table's footers (read
                # under this step's shared lock), silver and quarantine as the staging write saw them
                s_out = s_schema + [
                    checks.conservation_outcome(counts, bronze_rows(lake, ds), written(s_schema), written(q_schema)),
                    checks.quarantine_rate_outcome(ds.name, counts),
                    checks.volume_outcome(counts.silver_rows, checks.row_count_history(context.instance, silver), ds.name),
                ]
                q_out = q_schema + [
                    checks.volume_outcome(counts.quarantined, checks.row_count_history(context.instance, quarantine), ds.name),
                ]
                checks_s = time.monotonic() - checks_started
                yield from gate([(silver, s_out), (quarantine, q_out)])  # raises: nothing is published
            s_stats, q_stats = staged.stats
            audit.record(context, lake, "silver", ds.name, counts.silver_rows, started_at)  # gold/audit_log
            audit.record(context, lake, "quarantine", ds.name, counts.quarantined, started_at)
        finally:
            classified.unpersist()
        meta_started = time.monotonic()
        conservation = {
            "bronze_rows": counts.bronze_rows,
            "duplicate_row": counts.duplicate_row,
            "quarantined": counts.quarantined,
            "superseded": counts.superseded,
            "silver_rows": counts.silver_rows,
        }
        per_reason = reason_metrics(ds, counts.reasons)  # every known reason, 0 when none: continuous plots
        considered = counts.bronze_rows - counts.duplicate_row
        quarantine_rate = round(counts.quarantined / considered, 6) if considered else 0.0
        # pass rate: share of the rows that reached the rules/reference steps and passed them
        pass_rate = counts.silver_rows / max(counts.silver_rows + counts.quarantined, 1)
        s_meta = publish_metadata(lake, "silver", ds.name, s_stats, counts.silver_rows, started)
        s_meta.update(conservation)
        s_meta.update(per_reason)
        s_meta["pass_rate"] = round(pass_rate, 6)
        s_meta["checks_duration_s"] = round(checks_s, 3)
        s_meta["dagster/column_schema"] = column_schema(f"silver/{ds.name}")
        s_meta["quarantine_rate"] = quarantine_rate
        s_meta.update(column_lineage_metadata(s_df, platform.lake_uri, context.log))  # from the Spark plan
        if counts.invalid_json_nulled:
            s_meta["invalid_json_nulled"] = counts.invalid_json_nulled
        q_meta = publish_metadata(lake, "quarantine", ds.name, q_stats, counts.quarantined, started)
        q_meta.update(per_reason)
        q_meta["quarantine_reasons"] = MetadataValue.json(counts.reasons)
        q_meta["dagster/column_schema"] = column_schema(f"quarantine/{ds.name}")
        q_meta["quarantine_rate"] = quarantine_rate
        q_meta.update(column_lineage_metadata(q_df, platform.lake_uri, context.log))
        s_meta["metadata_duration_s"] = round(time.monotonic() - meta_started, 3)
        yield MaterializeResult(asset_key=silver, metadata=s_meta, check_results=[o.to_result(silver) for o in s_out])
        yield MaterializeResult(
            asset_key=quarantine, metadata=q_meta, check_results=[o.to_result(quarantine) for o in q_out]
        )

    return _silver


def audit_log_check():
    """The Pandera model of ``gold/audit_log`` (``schemas.AuditLog``) over every appended row: one
    Spark job. (``started_at <= finished_at`` is not re-checked here: ``audit.append`` refuses such
    a row, see test_audit_log.py.)"""
    key = AssetKey([audit.LAYER, audit.TABLE])

    @asset_check(asset=key, name=checks.SCHEMA,
                 description="Every audit row matches the AuditLog model (types, nulls, asset names, rows >= 0)")
    def _audit_log_schema(spark: SparkResource, platform: PlatformResource) -> AssetCheckResult:
        if not platform.lake.exists(audit.LAYER, audit.TABLE):
            return AssetCheckResult(passed=True, description="no audit rows yet", metadata={"rows_checked": 0})
        df = platform.lake.read(spark.get_session(), audit.LAYER, audit.TABLE)
        schema = [o for o in checks.validate(df, audit.ASSET) if o.name == checks.SCHEMA][0]
        return schema.to_result(key)

    return _audit_log_schema


RAW_SPECS = [raw_spec(ds) for ds in DATASETS]
BRONZE_ASSETS = [bronze_asset(ds) for ds in DATASETS]
SILVER_ASSETS = [silver_asset(ds) for ds in DATASETS]
RAW_CHECKS = [raw_drift_check(ds) for ds in DATASETS]
AUDIT_LOG_CHECK = audit_log_check()
