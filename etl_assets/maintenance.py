"""Lake maintenance as Dagster jobs: restore a table by time travel, compact bronze, retention.

- ``restore_table`` (``make restore TABLE=silver/customers VERSION=3``): Delta RESTORE of one
  table to an earlier version; a new commit (the history stays), logged in ``_publish`` and
  recorded in ``gold/audit_log`` (asset ``layer/table``, the restored rows).
- ``lake_maintenance`` (schedule ``lake_maintenance_daily``, 03:00 UTC): OPTIMIZE of every bronze
  table (incremental ingestion adds small files), then VACUUM of every table with the retention
  ``ETL_LAKE_RETENTION_HOURS`` (default 168, Delta's 7 days). VACUUM never deletes the files of
  the version the latest ``_publish`` row of a table names (``Lake.vacuum`` stretches the
  retention to cover it). Time travel reaches back as far as the retention.
"""


import os

from dagster import Config, DefaultScheduleStatus, OpExecutionContext, ScheduleDefinition, job, op
from pydantic import Field

from etl_assets import audit
from etl_assets.registry import DATASETS
from etl_assets.resources import PlatformResource, SparkResource

DEFAULT_RETENTION_HOURS = 168.0


def retention_hours() -> float:
    raw = os.environ.get("ETL_LAKE_RETENTION_HOURS", "").strip()
    hours = float(raw) if raw else DEFAULT_RETENTION_HOURS
    if hours < 0:
        raise ValueError(f"ETL_LAKE_RETENTION_HOURS={raw!r}: expected hours >= 0")
    return hours


class RestoreConfig(Config):
    table: str = Field(description="the table to roll back, as layer/table (e.g. silver/customers)")
    version: int = Field(description="the Delta version to restore (see the table's history or _publish)")


@op(description="Roll one lake table back to an earlier Delta version (RESTORE), audited.")
def restore_lake_table(context: OpExecutionContext, config: RestoreConfig, spark: SparkResource,
                       platform: PlatformResource) -> None:
    layer, _, table = config.table.partition("/")
    if not layer or not table or "/" in table:
        raise ValueError(f"table: {config.table!r} is not layer/table")
    started = audit.utcnow()
    stats = platform.lake.restore(spark.get_session(), layer, table, config.version, context.run_id)
    audit.record(context, platform.lake, layer, table, stats["rows"], started)
    context.log.info(f"{config.table}: restored to version {config.version} as version {stats['version']} "
                     f"({stats['rows']} rows)")


@job(description="Restore one lake table to an earlier version (make restore TABLE=... VERSION=...).")
def restore_table():
    restore_lake_table()


@op(description="OPTIMIZE every bronze table: compacts the small files incremental runs add.")
def optimize_bronze(context: OpExecutionContext, spark: SparkResource, platform: PlatformResource) -> int:
    """Returns how many tables were compacted."""
    session, lake, compacted = spark.get_session(), platform.lake, 0
    for ds in DATASETS:
        if lake.exists("bronze", ds.name):
            stats = lake.optimize(session, "bronze", ds.name, context.run_id)
            if stats:
                compacted += 1
                context.log.info(f"bronze/{ds.name}: compacted {stats['files_removed']} files into {stats['files']}")
    return compacted


@op(description="VACUUM every lake table with ETL_LAKE_RETENTION_HOURS (default 168).")
def vacuum_lake(context: OpExecutionContext, spark: SparkResource, platform: PlatformResource, compacted: int) -> None:
    session, lake, hours = spark.get_session(), platform.lake, retention_hours()
    for layer, table in lake.tables():
        kept = lake.vacuum(session, layer, table, hours, context.run_id)
        context.log.info(f"{layer}/{table}: vacuumed with a retention of {kept['retention_hours']} h "
                         f"(keeps version {kept['kept_version']} named by _publish)")


@job(description="Compact bronze, then VACUUM every table with the retention policy.")
def lake_maintenance():
    vacuum_lake(optimize_bronze())


lake_maintenance_daily = ScheduleDefinition(
    job=lake_maintenance, cron_schedule="0 3 * * *", execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING if os.environ.get("ETL_ENV", "local") != "local"
    else DefaultScheduleStatus.STOPPED,
)
