"""The Spark entry point shipped in the package: build a selection of lake tables on the Spark
session of this process and report each one to Dagster through Pipes.

It runs *the same asset code* as every other engine: the selected bronze/silver/quarantine/gold
assets of ``etl_assets`` are executed in this process (an ephemeral, in-memory Dagster instance,
in-process executor, ``SparkResource`` -> the driver's own session), and every materialization
and asset check result is forwarded to the orchestrating Dagster run through
``dagster_pipes``. The PII salt/key are read here from AWS Secrets Manager (``ETL_ENV``'s YAML),
never passed in the job parameters.

On EMR Serverless (see ``etl_assets.emr.pipes``)::

    spark-submit s3://.../entrypoint.py --select bronze/orders,silver/orders,gold/fact_orders

Locally, against an embedded Spark (what the tests do under ``PipesSubprocessClient``)::

    python etl_assets/emr/entrypoint.py --master 'local[2]' --select bronze/rates,silver/rates

Without a Dagster parent (no ``DAGSTER_PIPES_CONTEXT``) it builds the tables and prints what it
would have reported.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from typing import Any, Mapping


def _parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--select", default="", help="comma-separated asset keys, e.g. bronze/orders,gold/fact_orders")
    ap.add_argument("--master", default=None, help="Spark master when not started by spark-submit (local runs)")
    return ap.parse_args(argv)


def _external_metadata(metadata: Mapping[str, Any]) -> dict[str, dict]:
    """Dagster ``MetadataValue``s -> the Pipes wire form ``{"raw_value": ..., "type": ...}``."""
    from dagster import (
        AssetKey,
        BoolMetadataValue,
        FloatMetadataValue,
        IntMetadataValue,
        JsonMetadataValue,
        MarkdownMetadataValue,
        NullMetadataValue,
        PathMetadataValue,
        TableColumnLineageMetadataValue,
        TableSchemaMetadataValue,
        TextMetadataValue,
        TimestampMetadataValue,
        UrlMetadataValue,
    )

    def col(c):
        out = {"name": c.name, "type": c.type, "description": c.description, "tags": dict(c.tags or {})}
        cons = c.constraints
        if cons is not None:
            out["constraints"] = {"nullable": cons.nullable, "unique": cons.unique, "other": list(cons.other or [])}
        return out

    out: dict[str, dict] = {}
    for k, v in metadata.items():
        if isinstance(v, BoolMetadataValue):
            out[k] = {"raw_value": v.value, "type": "bool"}
        elif isinstance(v, IntMetadataValue):
            out[k] = {"raw_value": v.value, "type": "int"}
        elif isinstance(v, FloatMetadataValue):
            out[k] = {"raw_value": v.value, "type": "float"}
        elif isinstance(v, TextMetadataValue):
            out[k] = {"raw_value": v.value, "type": "text"}
        elif isinstance(v, PathMetadataValue):
            out[k] = {"raw_value": v.value, "type": "path"}
        elif isinstance(v, UrlMetadataValue):
            out[k] = {"raw_value": v.value, "type": "url"}
        elif isinstance(v, MarkdownMetadataValue):
            out[k] = {"raw_value": v.value, "type": "md"}
        elif isinstance(v, JsonMetadataValue):
            out[k] = {"raw_value": v.value, "type": "json"}
        elif isinstance(v, TimestampMetadataValue):
            out[k] = {"raw_value": v.value, "type": "timestamp"}
        elif isinstance(v, NullMetadataValue):
            out[k] = {"raw_value": None, "type": "null"}
        elif isinstance(v, TableSchemaMetadataValue):
            out[k] = {"raw_value": {"columns": [col(c) for c in v.schema.columns]}, "type": "table_schema"}
        elif isinstance(v, TableColumnLineageMetadataValue):
            deps = {
                column: [
                    {"asset_key": AssetKey.from_coercible(d.asset_key).to_user_string(), "column_name": d.column_name}
                    for d in ds
                ]
                for column, ds in v.column_lineage.deps_by_column.items()
            }
            out[k] = {"raw_value": {"deps_by_column": deps}, "type": "table_column_lineage"}
        elif isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = {"raw_value": v, "type": "__infer__"}
        else:  # anything else: its text form rather than losing it
            out[k] = {"raw_value": str(getattr(v, "value", v)), "type": "text"}
    return out


def run_selection(selection: list[str], master: str | None = None):
    """Execute the selected assets of ``etl_assets`` in this process; the result of the run."""
    from dagster import AssetKey, DagsterInstance
    from pyspark.sql import SparkSession

    from etl_assets.definitions import build_definitions
    from etl_assets.settings import load_settings

    from etl_assets.resources import BASE_CONF

    settings = load_settings()
    # The session of this process: spark-submit's (EMR) or an embedded one for local runs;
    # the assets' SparkResource then finds it (getOrCreate) and adds its SQL settings.
    builder = SparkSession.builder.appName("etl_assets_emr")
    if master:
        builder = builder.master(master).config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    conf = dict(BASE_CONF)
    if master:  # a local stand-in for EMR: Delta and S3A from the cached jars (EMR's spark-submit
        # brings its own, and EMRFS serves s3://); s3a/s3 mapped like SparkResource's own sessions
        from etl_assets.jars import jar_paths
        from etl_assets.resources import DELTA_CONF
        from etl_assets.s3 import s3a_spark_conf

        conf.update({"spark.jars": ",".join(jar_paths()), **DELTA_CONF, **s3a_spark_conf()})
    for k, v in conf.items():
        builder = builder.config(k, v)
    builder.getOrCreate()
    defs = build_definitions(settings)
    job = defs.resolve_implicit_global_asset_job_def()
    wanted = [AssetKey.from_user_string(s) for s in selection]
    # An asset that cannot be subset (silver_<ds> writes silver and quarantine) runs whole;
    # ``report`` forwards only what was asked for.
    keys: set = set()
    for key in wanted:
        ad = defs.resolve_assets_def(key)
        keys |= {key} if ad.can_subset else set(ad.keys)
    return job.execute_in_process(
        asset_selection=sorted(keys), instance=DagsterInstance.ephemeral(), raise_on_error=False
    )


def report(pipes, result, selection: list[str]) -> tuple[int, int]:
    """Forward the selected assets' materializations and check results; (materialized, checks)."""
    wanted = set(selection)
    materialized = checks = 0
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            if mat.asset_key.to_user_string() not in wanted:
                continue
            pipes.report_asset_materialization(
                asset_key=mat.asset_key.to_user_string(),
                metadata=_external_metadata(mat.metadata),
                data_version=(mat.tags or {}).get("dagster/data_version"),
            )
            materialized += 1
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            if ev.asset_key.to_user_string() not in wanted:
                continue
            pipes.report_asset_check(
                check_name=ev.check_name,
                passed=ev.passed,
                severity=ev.severity.value if ev.severity is not None else "ERROR",
                metadata=_external_metadata(ev.metadata),
                asset_key=ev.asset_key.to_user_string(),
            )
            checks += 1
    return materialized, checks


class _PrintingPipes:
    """Stand-in when no Dagster process launched us: print what would be reported."""

    def __init__(self):
        import logging

        self.log = logging.getLogger("etl_assets.emr")
        self.extras: dict = {}
        self.asset_keys: list = []

    def report_asset_materialization(self, asset_key, metadata=None, data_version=None):
        rows = (metadata or {}).get("dagster/row_count", {}).get("raw_value")
        print(f"materialized {asset_key} rows={rows}", flush=True)

    def report_asset_check(self, check_name, passed, severity="ERROR", metadata=None, asset_key=None):
        print(f"check {asset_key}:{check_name} passed={passed}", flush=True)


def main(argv=None) -> int:
    args = _parse_args(argv if argv is not None else sys.argv[1:])
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    started = _dt.datetime.now(_dt.timezone.utc)
    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        cm = open_dagster_pipes()
    else:
        import contextlib

        cm = contextlib.nullcontext(_PrintingPipes())
    with cm as pipes:
        selection = [s for s in args.select.split(",") if s] or list(pipes.extras.get("selection") or []) or list(
            pipes.asset_keys or []
        )
        if not selection:
            raise SystemExit("nothing selected: pass --select or launch through Dagster Pipes")
        pipes.log.info(f"building {len(selection)} tables with etl_assets on this Spark session")
        result = run_selection(selection, master=args.master)
        materialized, checks = report(pipes, result, selection)
        took = (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds()
        pipes.log.info(f"reported {materialized} materializations and {checks} check results in {took:.1f}s")
        if not result.success:
            failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            for e in result.all_events:
                if e.event_type_value == "STEP_FAILURE" and e.step_failure_data and e.step_failure_data.error:
                    pipes.log.error(f"{e.step_key} failed: {e.step_failure_data.error.to_string()}")
            raise RuntimeError(f"etl_assets steps failed on this engine: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    # Inside this process the engine is this process's own Spark session: load the classic
    # (per-table) assets, never the EMR launcher again; one process runs every step.
    os.environ["ETL_SPARK_ENGINE"] = "classic"
    os.environ["ETL_EXECUTOR"] = "in_process"
    # Spark reads the landed objects in S3 itself: never boto3 copies on the driver's disk,
    # which EMR's executors on other hosts could not see (whatever the launching host uses)
    os.environ["ETL_S3_READ_MODE"] = "s3a"
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    if os.path.isfile(os.path.join(root, "etl_assets", "__init__.py")) and root not in sys.path:
        sys.path.insert(0, root)  # run from a source tree; on EMR the package is installed
    if sys.path and os.path.abspath(sys.path[0]) == here:
        sys.path.pop(0)  # never import this folder's modules as top-level ones
    sys.exit(main())
