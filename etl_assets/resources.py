"""Dagster resources: the Spark engine and the platform's storage locations and secrets.

``SparkResource`` is the one way asset code gets a ``SparkSession``; the same asset code runs on
an embedded ``local[*]`` driver, on a cluster master (``spark://``, ``yarn``, ``k8s://``) or on a
Spark Connect server (``sc://``). Code that touches the session must not use ``sparkContext``
(or RDDs, ``_jvm``, ``_jsc``): Spark Connect has none.

``PlatformResource`` carries where the landing zone and lake are and the PII salt/key. Outside
``local`` it holds the *names* of the secrets, not their values (resource configuration is shown
in the Dagster UI), and resolves them from AWS Secrets Manager in the process that runs a step.
"""

from __future__ import annotations

import os

from dagster import ConfigurableResource, EnvVar, in_process_executor, multiprocess_executor
from pydantic import Field, PrivateAttr
from pyspark import SparkContext
from pyspark.sql import SparkSession

from etl_assets.jars import cache_dir, jar_paths
from etl_assets.lake import Lake
from etl_assets.s3 import s3a_spark_conf
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

# Delta Lake in a session this process creates (the jars: etl_assets/jars.py, cached by make install).
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # the table state of small tables: a few partitions, not 50 tiny tasks per snapshot
    "spark.databricks.delta.snapshotPartitions": "2",
}

# Settings a Spark Connect client cannot set: they belong to the server's (static) configuration.
_SERVER_SIDE_PREFIXES = ("spark.ui", "spark.hadoop", "spark.driver", "spark.executor", "spark.master",
                         "spark.jars", "spark.sql.extensions", "spark.sql.catalog.spark_catalog")

def is_connect_session(spark) -> bool:
    """True for a Spark Connect session (no ``sparkContext``, no JVM in this process)."""
    try:
        from pyspark.sql.utils import is_remote

        if is_remote():
            return True
    except ImportError:  # pragma: no cover
        pass
    return type(spark).__module__.startswith("pyspark.sql.connect")


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

    @classmethod
    def from_settings(cls, spark_settings) -> "SparkResource":
        """From ``Settings.spark``. The EMR engine runs tables on EMR; Dagster-side reads (checks)
        then use an embedded session with the same settings."""
        s = spark_settings
        return cls(
            master=s.master if s.engine != "emr" else "local[*]",
            remote=s.remote if s.engine == "connect" else None,
            shuffle_partitions=s.shuffle_partitions,
            driver_memory=s.driver_memory,
            conf=dict(s.conf),
        )

    @property
    def engine(self) -> str:
        return "connect" if self.remote else "classic"

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
        conf = {**BASE_CONF, "spark.sql.shuffle.partitions": str(self.shuffle_partitions)}
        ours = False
        if not self.remote and SparkContext._active_spark_context is None:
            ours = True
            # a session this process creates: Delta and S3A from the cached jars (a session that
            # already exists, spark-submit's on EMR, brings its own)
            conf.update({"spark.jars": ",".join(jar_paths()), **DELTA_CONF, **s3a_spark_conf()})
        conf.update(self.conf)
        for k, v in conf.items():
            if self.remote and k.startswith(_SERVER_SIDE_PREFIXES):
                continue  # server-side settings under Spark Connect
            builder = builder.config(k, v)
        spark = builder.getOrCreate()
        if not self.remote and not is_connect_session(spark):
            spark.sparkContext.setLogLevel(os.environ.get("ETL_SPARK_LOG_LEVEL", "ERROR"))
            if not ours and str(cache_dir()) in spark.sparkContext.getConf().get("spark.jars", ""):
                # a session this process created earlier with our jars: the AWS settings of now
                # (S3A reads Hadoop settings from the session's runtime configuration too)
                for k, v in s3a_spark_conf().items():
                    if k.startswith("spark.hadoop."):
                        spark.conf.set(k[len("spark.hadoop."):], v)
                # its JVM was started with the environment of then: the credentials of now
                # (keys in the environment) are handed over explicitly (Spark redacts them)
                if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
                    token = os.environ.get("AWS_SESSION_TOKEN", "")
                    spark.conf.set("fs.s3a.access.key", os.environ["AWS_ACCESS_KEY_ID"])
                    spark.conf.set("fs.s3a.secret.key", os.environ["AWS_SECRET_ACCESS_KEY"])
                    spark.conf.set("fs.s3a.session.token", token)
                    spark.conf.set("fs.s3a.aws.credentials.provider",
                                   "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider" if token
                                   else "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider")
        return spark


class PlatformResource(ConfigurableResource):
    """Where the landing zone and the lake are, and the PII secrets (never logged).

    Either ``pii_salt``/``pii_key`` hold the values (local development, tests, or an
    ``EnvVar``), or ``pii_salt_secret``/``pii_key_secret`` name AWS Secrets Manager secrets
    (``<name or ARN>[#field]``) that are read when a step first needs them."""

    env: str = "local"
    landing_uri: str
    lake_uri: str
    pii_salt: str = Field(default="", description="ETL_PII_SALT (secret); empty when read from a secret store")
    pii_key: str = Field(default="", description="ETL_PII_KEY (secret); empty when read from a secret store")
    pii_salt_secret: str | None = Field(default=None, description="Secrets Manager reference of the salt")
    pii_key_secret: str | None = Field(default=None, description="Secrets Manager reference of the key")
    secrets_region: str | None = None
    secrets_endpoint_url: str | None = None

    _lake: Lake | None = PrivateAttr(default=None)
    _landing: LandingStore | None = PrivateAttr(default=None)
    _pii: Pii | None = PrivateAttr(default=None)

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            self._lake = Lake(self.lake_uri)
        return self._lake

    def setup_for_execution(self, context) -> None:
        # a lake that cannot be used (an S3 bucket that is missing or unreachable with the
        # credentials at hand) stops the run before any step, naming ETL_LAKE_URI
        self.lake.check()

    @property
    def landing(self) -> LandingStore:
        if self._landing is None:
            self._landing = landing_store(self.landing_uri)
        return self._landing

    def _secret(self, value: str, ref: str | None, setting: str) -> str:
        if value:
            return value
        if not ref:
            raise ValueError(f"{setting}: neither a value nor a secret reference is configured")
        from etl_assets.secrets import fetch_secret

        return fetch_secret(ref, setting=setting, region=self.secrets_region, endpoint_url=self.secrets_endpoint_url)

    @property
    def pii(self) -> Pii:
        if self._pii is None:
            self._pii = Pii(
                salt=self._secret(self.pii_salt, self.pii_salt_secret, "ETL_PII_SALT"),
                key=self._secret(self.pii_key, self.pii_key_secret, "ETL_PII_KEY"),
            )
        return self._pii

    @classmethod
    def from_settings(cls, settings) -> "PlatformResource":
        common = dict(env=settings.env, landing_uri=settings.landing_uri, lake_uri=settings.lake_uri)
        if settings.pii_source == "aws_secretsmanager":
            s = settings.secrets
            return cls(
                **common,
                pii_salt_secret=s.pii_salt,
                pii_key_secret=s.pii_key,
                secrets_region=s.region,
                secrets_endpoint_url=s.endpoint_url,
            )
        if settings.pii_source == "env":  # the UI shows the variable's name, not its value
            return cls(**common, pii_salt=EnvVar("ETL_PII_SALT"), pii_key=EnvVar("ETL_PII_KEY"))
        return cls(**common, pii_salt=settings.pii_salt, pii_key=settings.pii_key)


def build_executor(settings):
    """The run executor of ``settings.executor`` (``auto`` was resolved by ``load_settings``)."""
    ex = settings.executor
    if ex.kind == "multiprocess":
        return multiprocess_executor.configured({"max_concurrent": ex.max_concurrent})
    return in_process_executor
