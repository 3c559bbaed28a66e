"""The Dagster code location: assets, resources per environment, and the ``etl_all`` job."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from etl_assets.assets.factory import AUDIT_LOG_CHECK, BRONZE_ASSETS, RAW_CHECKS, RAW_SPECS, SILVER_ASSETS
from etl_assets.assets.gold import GOLD_ASSETS
from etl_assets.alerts import ALERT_SENSORS
from etl_assets.audit import audit_log_spec, code_version
from etl_assets.docs import with_code_references
from etl_assets.maintenance import lake_maintenance, lake_maintenance_daily, restore_table
from etl_assets.resources import PlatformResource, SparkResource, build_executor
from etl_assets.sensors import landing_arrival_sensor, landing_ingest_job, lakehouse_automation_sensor
from etl_assets.settings import Settings, load_settings


def build_resources(settings: Settings) -> dict:
    """The resources of every environment, declared once: ``ETL_ENV`` selects
    ``etl_assets/environments/<env>.yaml`` and environment variables override it (settings.py)."""
    resources = {
        "spark": SparkResource.from_settings(settings.spark),  # local[*] / master URL / sc://
        "platform": PlatformResource.from_settings(settings),  # secrets by reference outside local
    }
    if settings.spark.engine == "emr":  # tables built on EMR Serverless through Pipes
        from etl_assets.emr.launch import EmrServerlessRunner

        resources["emr"] = EmrServerlessRunner.from_settings(settings)
    return resources


def engine_assets(settings: Settings, assets: list) -> list:
    """The EMR engine replaces the per-table Spark assets by one multi-asset (same keys)."""
    if settings.spark.engine != "emr":
        return assets
    from etl_assets.emr.launch import emr_assets

    return emr_assets(assets)


# Every table (bronze, silver, quarantine, gold): everything present in the landing zone.
# Executor per environment (Definitions below): in-process with a classic engine, one
# SparkSession (one JVM) serves every step; multiprocess with Spark Connect (thin clients).
etl_all = define_asset_job(
    "etl_all",
    selection=AssetSelection.groups("bronze", "silver", "gold")
    | AssetSelection.checks_for_assets(*[s.key for s in RAW_SPECS]),
    description="Process everything in the landing zone: bronze, silver + quarantine, gold.",
)

# Disaster recovery (`make rebuild`, README "Disaster recovery"): silver, quarantine and gold
# rebuilt from the bronze tables kept in the lake; `etl_all` (mode full) rebuilds from landing.
rebuild_from_bronze = define_asset_job(
    "rebuild_from_bronze",
    selection=AssetSelection.groups("silver", "gold"),
    description="Rebuild every silver, quarantine and gold table from the bronze tables in the lake.",
)


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    code_version()  # resolve the git SHA of the audit rows once, at load
    return Definitions(
        # code references: each asset's function, registry entry and transform (git links with
        # ETL_CODE_REFERENCES_GIT_URL), see etl_assets/docs.py
        # gold/audit_log: appended by every publish (etl_assets/audit.py), shown as an asset spec
        assets=with_code_references(
            engine_assets(settings, [*RAW_SPECS, *BRONZE_ASSETS, *SILVER_ASSETS, *GOLD_ASSETS]) + [audit_log_spec()]
        ),
        asset_checks=[*RAW_CHECKS, AUDIT_LOG_CHECK],
        jobs=[etl_all, landing_ingest_job, rebuild_from_bronze, restore_table, lake_maintenance],
        schedules=[lake_maintenance_daily],  # OPTIMIZE bronze + VACUUM (etl_assets/maintenance.py)
        sensors=[landing_arrival_sensor, lakehouse_automation_sensor, *ALERT_SENSORS],  # alerts: etl_assets/alerts.py
        resources=build_resources(settings),
        # Runs launched by the automation sensor: one process, one SparkSession (as etl_all).
        executor=build_executor(settings),
    )


defs = build_definitions()
