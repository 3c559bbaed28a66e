"""Dagster resources: the Spark engine and the platform's storage locations and secrets."""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr
from pyspark.sql import SparkSession

from etl_assets.lake import Lake
from etl_assets.storage import LandingStore, landing_store
from etl_assets.transforms.silver import Pii

# Settings every session gets: UTC everywhere, adaptive execution, quiet UI-less driver.
BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.sources.partitionOverwriteMode": "static",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.hadoop.parquet.enable.summary-metadata": "false",
}


class SparkResource(ConfigurableResource):
    """One SparkSession per process, shared by every asset of a run.

    ``master`` is ``local[*]`` (embedded) by default, or a cluster URL (``spark://host:7077``,
    ``yarn``); ``remote`` (``sc://host:15002``) selects Spark Connect instead."""

    master: str = Field(default="local[*]", description="Spark master URL")
    remote: str | None = Field(default=None, description="Spark Connect URL; overrides master")
    app_name: str = "etl_assets"
    shuffle_partitions: int = Field(default=8, description="spark.sql.shuffle.partitions")
    driver_memory: str = "4g"
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings")

    def get_session(self) -> SparkSession:
        builder = SparkSession.builder.appName(self.app_name)
        if self.remote:
            builder = builder.remote(self.remote)
        else:
            builder = builder.master(self.master).config("spark.driver.memory", self.driver_memory)
            if self.master.startswith("local"):
                # embedded: keep the driver on loopback
                builder = builder.config("spark.driver.host", "127.0.0.1").config(
                    "spark.driver.bindAddress", "127.0.0.1"
                )
        conf = {**BASE_CONF, "spark.sql.shuffle.partitions": str(self.shuffle_partitions), **self.conf}
        for k, v in conf.items():
            if self.remote and (k.startswith("spark.ui") or k.startswith("spark.hadoop")):
                continue  # server-side settings under Spark Connect
            builder = builder.config(k, v)
        spark = builder.getOrCreate()
        if not self.remote:
            spark.sparkContext.setLogLevel(os.environ.get("ETL_SPARK_LOG_LEVEL", "ERROR"))
        return spark


class PlatformResource(ConfigurableResource):
    """Where the landing zone and the lake are, and the PII secrets (never logged)."""

    env: str = "local"
    landing_uri: str
    lake_uri: str
    pii_salt: str = Field(description="ETL_PII_SALT (secret)")
    pii_key: str = Field(description="ETL_PII_KEY (secret)")

    _lake: Lake | None = PrivateAttr(default=None)
    _landing: LandingStore | None = PrivateAttr(default=None)

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            self._lake = Lake(self.lake_uri)
        return self._lake

    @property
    def landing(self) -> LandingStore:
        if self._landing is None:
            self._landing = landing_store(self.landing_uri)
        return self._landing

    @property
    def pii(self) -> Pii:
        return Pii(salt=self.pii_salt, key=self.pii_key)
