"""The Dagster code location: assets, resources per environment, and the ``etl_all`` job."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from etl_assets.assets.factory import BRONZE_ASSETS, RAW_SPECS, SILVER_ASSETS
from etl_assets.assets.gold import GOLD_ASSETS
from etl_assets.resources import PlatformResource, SparkResource
from etl_assets.settings import Settings, load_settings


def build_resources(settings: Settings) -> dict:
    return {
        "spark": SparkResource(),
        "platform": PlatformResource(
            env=settings.env,
            landing_uri=settings.landing_uri,
            lake_uri=settings.lake_uri,
            pii_salt=settings.pii_salt,
            pii_key=settings.pii_key,
        ),
    }


# Every table (bronze, silver, quarantine, gold): everything present in the landing zone.
# In-process: one SparkSession (one JVM) serves every step of the run.
etl_all = define_asset_job(
    "etl_all",
    selection=AssetSelection.groups("bronze", "silver", "gold"),
    executor_def=in_process_executor,
    description="Process everything in the landing zone: bronze, silver + quarantine, gold.",
)


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    return Definitions(
        assets=[*RAW_SPECS, *BRONZE_ASSETS, *SILVER_ASSETS, *GOLD_ASSETS],
        jobs=[etl_all],
        resources=build_resources(settings),
    )


defs = build_definitions()
