"""The lakehouse on EMR Serverless through Dagster Pipes.

With ``spark.engine: emr`` (``prod.yaml``), the per-table Spark assets are replaced by one
subsettable multi-asset with the same keys, groups, dependencies and checks
(``emr_assets``). Its step submits *one* EMR Serverless job run for the selected tables
(``PipesEMRServerlessClient``); the job runs the shipped entry point
(``etl_assets/emr/entrypoint.py``), which executes the very same asset code on EMR's Spark and
reports every materialization and check result back through Pipes (CloudWatch messages).

Deployment (CD, per release) puts two artifacts under ``emr.artifacts_uri``:

- ``entrypoint.py``: ``etl_assets/emr/entrypoint.py`` of the release (``ENTRYPOINT`` below);
- ``etl_assets_env.tar.gz``: a ``venv-pack`` of a virtualenv with this package installed, built
  for EMR's Amazon Linux / Python (unpacked by Spark as ``./environment``). It holds the
  project's dependencies pinned by ``requirements.lock`` *but pyspark* (EMR's own pyspark and
  Delta jars are used), the recipe of ``make emr-runtime-env``: ``pip install -c <lock without
  pyspark> <pyproject dependencies without pyspark>`` then ``pip install --no-deps .``.

To debug the entry point on a laptop: ``python etl_assets/emr/entrypoint.py --master 'local[2]'
--select bronze/rates,silver/rates`` (prints what it would report). The tests run the whole
path -- this client, CloudWatch messages, the entry point on local Spark -- against moto.
"""

import os
from pathlib import Path
from typing import Any, Sequence

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    ConfigurableResource,
    Failure,
    MaterializeResult,
    multi_asset,
)
from pydantic import Field

ENTRYPOINT = Path(__file__).with_name("entrypoint.py")
ARCHIVE_NAME = "etl_assets_env.tar.gz"

# Environment variables the EMR driver gets (never secrets: the driver reads those itself).
_FORWARDED = (
    "ETL_PII_SALT_SECRET",
    "ETL_PII_KEY_SECRET",
    "ETL_SECRETS_REGION",
    "ETL_SECRETS_PROVIDER",
    "ETL_SPARK_SHUFFLE_PARTITIONS",
)


def driver_env(settings, environ=None) -> dict[str, str]:
    """What the entry point needs to load the same settings on the driver (no secret values)."""
    environ = os.environ if environ is None else environ
    env = {
        "ETL_ENV": settings.env,
        "ETL_LANDING_URI": settings.landing_uri,
        "ETL_LAKE_URI": settings.lake_uri,
        "ETL_SPARK_ENGINE": "classic",
        "ETL_EXECUTOR": "in_process",
    }
    env.update({k: environ[k] for k in _FORWARDED if environ.get(k)})
    return env


EMR_DELTA_CONF = {
    "spark.jars": "/usr/share/aws/delta/lib/delta-spark.jar,/usr/share/aws/delta/lib/delta-storage.jar",
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def start_job_run_params(
    emr,
    env: dict[str, str],
    selection: Sequence[str],
    *,
    name: str = "etl_assets",
    python: str = "./environment/bin/python",
) -> dict[str, Any]:
    """``start_job_run`` parameters of EMR Serverless for building ``selection``.

    ``emr`` is ``Settings.emr`` (or the ``EmrServerlessRunner`` resource: same field names).
    The Pipes client adds its bootstrap variables (``DAGSTER_PIPES_*``) and Dagster tags."""
    artifacts = emr.artifacts_uri.rstrip("/")
    conf = {
        "spark.archives": f"{artifacts}/{ARCHIVE_NAME}#environment",
        "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": python,
        "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": python,
        "spark.executorEnv.PYSPARK_PYTHON": python,
        # the lake is Delta Lake: the Delta jars of the EMR release (emr.spark_conf may override)
        **EMR_DELTA_CONF,
        **{f"spark.emr-serverless.driverEnv.{k}": v for k, v in env.items()},
        **dict(emr.spark_conf or {}),
    }
    for k, v in conf.items():
        if any(c.isspace() for c in f"{k}{v}"):
            raise ValueError(f"Spark setting {k}={v!r} has whitespace; not allowed in sparkSubmitParameters")
    monitoring: dict[str, Any] = {
        "cloudWatchLoggingConfiguration": {
            "enabled": True,  # Pipes reads the entry point's messages from the driver's stdout/stderr
            **({"logGroupName": emr.log_group} if emr.log_group else {}),
        }
    }
    if emr.logs_uri:
        monitoring["s3MonitoringConfiguration"] = {"logUri": emr.logs_uri}
    return {
        "applicationId": emr.application_id,
        "executionRoleArn": emr.execution_role_arn,
        "name": name,
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": f"{artifacts}/{ENTRYPOINT.name}",
                "entryPointArguments": ["--select", ",".join(selection)],
                "sparkSubmitParameters": " ".join(f"--conf {k}={v}" for k, v in conf.items()),
            }
        },
        "configurationOverrides": {"monitoringConfiguration": monitoring},
        "executionTimeoutMinutes": int(emr.timeout_minutes),
        "tags": {"etl_assets/env": env.get("ETL_ENV", "")},
    }


def build_pipes_client(region: str | None, *, emr_client=None, logs_client=None, poll_interval: float = 10.0):
    """The ``PipesEMRServerlessClient`` (messages read from the driver's CloudWatch logs)."""
    import boto3
    from dagster_aws.pipes import PipesCloudWatchMessageReader, PipesEMRServerlessClient

    session = boto3.session.Session(region_name=region)
    return PipesEMRServerlessClient(
        client=emr_client or session.client("emr-serverless"),
        message_reader=PipesCloudWatchMessageReader(client=logs_client or session.client("logs")),
        poll_interval=poll_interval,
    )


class EmrServerlessRunner(ConfigurableResource):
    """One EMR Serverless job run per step (``prod.yaml`` ``emr:`` section)."""

    region: str | None = None
    application_id: str
    execution_role_arn: str
    artifacts_uri: str
    logs_uri: str | None = None
    log_group: str | None = None
    timeout_minutes: int = 180
    spark_conf: dict[str, str] = Field(default_factory=dict)
    driver_env: dict[str, str] = Field(default_factory=dict, description="ETL_* settings for the driver (no secrets)")
    poll_interval: float = 10.0

    @classmethod
    def from_settings(cls, settings) -> "EmrServerlessRunner":
        e = settings.emr
        return cls(
            region=e.region,
            application_id=e.application_id,
            execution_role_arn=e.execution_role_arn,
            artifacts_uri=e.artifacts_uri,
            logs_uri=e.logs_uri,
            log_group=e.log_group,
            timeout_minutes=e.timeout_minutes,
            spark_conf=dict(e.spark_conf),
            driver_env=driver_env(settings),
        )

    def params(self, selection: Sequence[str], run_id: str = "") -> dict[str, Any]:
        return start_job_run_params(self, self.driver_env, selection, name=f"etl_assets-{run_id[:8] or 'adhoc'}")

    def client(self, **kwargs):
        return build_pipes_client(self.region, poll_interval=self.poll_interval, **kwargs)

    def run(self, context: AssetExecutionContext, selection: list[str]):
        return self.client().run(context=context, start_job_run_params=self.params(selection, context.run_id))


def _on_spark(a) -> bool:
    return isinstance(a, AssetsDefinition) and a.is_executable and any("spark" in s.kinds for s in a.specs)


def emr_assets(assets: Sequence) -> list:
    """``assets`` with every Spark asset replaced by one subsettable multi-asset that runs the
    selected tables through the ``emr`` resource (``EmrServerlessRunner``)."""
    spark_assets = [a for a in assets if _on_spark(a)]
    if not spark_assets:
        return list(assets)
    specs = [s.replace_attributes(skippable=True) for a in spark_assets for s in a.specs]
    check_specs = [c for a in spark_assets for c in a.check_specs]

    @multi_asset(
        name="lakehouse_on_emr",
        specs=specs,
        check_specs=check_specs,
        can_subset=True,
        description="Builds the selected lake tables in one EMR Serverless job run "
        "(etl_assets/emr/entrypoint.py), reported through Dagster Pipes.",
    )
    def lakehouse_on_emr(context: AssetExecutionContext, emr: EmrServerlessRunner):
        selection = sorted(k.to_user_string() for k in context.selected_asset_keys)
        results = list(emr.run(context, selection).get_results())
        reported = {r.asset_key for r in results if isinstance(r, MaterializeResult)}
        yield from results
        missing = sorted(k.to_user_string() for k in set(context.selected_asset_keys) - reported)
        if missing:
            raise Failure(f"the Spark job reported no materialization for: {', '.join(missing)}")

    return [a for a in assets if not _on_spark(a)] + [lakehouse_on_emr]
