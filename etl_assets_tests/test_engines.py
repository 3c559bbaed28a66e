"""The same asset code on every engine, with the environments' own configurations.

- Staging, as staging runs: ``ETL_ENV=staging`` with nothing of ``staging.yaml`` changed but
  the addresses -- ``etl_all`` on a Spark Connect server (Delta + S3A jars and settings) whose
  executors run on a Spark standalone cluster (master + worker); the landing zone and the Delta
  lake in staging's own buckets (``acme-etl-staging-landing``, ``acme-etl-staging-lake``) on
  moto's S3, Spark reading the landed objects through ``s3a`` (no copies on a local disk) and
  writing the Delta tables to S3; PII secrets from Secrets Manager on moto; the prod
  ``dagster.yaml``: runs, events and check results in a real PostgreSQL server, step logs in
  S3. The run's process is a thin Connect client that could not start a JVM (no Spark, no Java).
  Delta's Connect plugin (``io.delta:delta-connect-server``) is not in the server: Maven Central
  does not serve it for this Spark/Scala; the server has delta-spark and Delta's SQL extension,
  which is all the platform's client code uses (``DataFrameWriter.format("delta")`` and SQL).
  This run passing is the proof.
- A classic driver (``ETL_SPARK_MASTER=spark://``) on the same cluster builds bronze+silver
  rates equal to staging's.
- Prod, with ``prod.yaml``'s own landing and lake buckets (``acme-etl-prod-landing``,
  ``acme-etl-prod-lake``) and only its EMR ids and the endpoints filled in: the Pipes client
  submits the shipped entry point with the right job parameters; a fake EMR (AWS on moto) runs
  it on local Spark standing in for EMR Serverless -- reading the landing through ``s3a``,
  writing the Delta lake in S3 -- and Dagster reads the materializations back from CloudWatch.
  The silver rows, read from S3 with ``deltalake``, equal staging's.

One full ``etl_all`` in the module (2-3 CPU-minutes with the asset checks on 2 cores): staging's
covers the Connect engine, the cluster, the S3 lake and the PostgreSQL instance at once; the
other engines build the rates tables only. Servers are started and stopped here, on 127.0.0.1
(``servers.py``); moto runs in a process of its own (``moto_server.moto_process``: ``deltalake``
holds the GIL while it waits for S3). Every ``etl_all`` run is a ``dagster job execute``
subprocess, so this process's SparkSession is untouched.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest

from etl_assets.registry import GOLD_TABLES
from etl_assets.sample_data import generate
from etl_assets.settings import load_settings
from etl_assets_tests.moto_server import moto_process
from etl_assets_tests.servers import (
    AWS_TEST_ENV,
    PYTHON,
    REPO_ROOT,
    clean_env,
    master_state,
    postgres_server,
    read_table,
    run_etl_all,
    spark_connect_server,
    spark_standalone,
)

pytestmark = pytest.mark.slow  # whole runs on every engine: `make test-slow`

SALT = "engines-salt-from-the-secret-store"
KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # 32 ASCII characters
PII_ENV = {"ETL_PII_SALT": SALT, "ETL_PII_KEY": KEY}
LOG_GROUP = "/aws/emr-serverless/etl_assets"
# the environments' own locations (staging.yaml, prod.yaml), as buckets on moto
STAGING_LANDING, STAGING_LAKE = "s3://acme-etl-staging-landing/raw", "s3://acme-etl-staging-lake/lake"
PROD_LANDING, PROD_LAKE = "s3://acme-etl-prod-landing/raw", "s3://acme-etl-prod-lake/lake"
LINEAGE = ("_ingested_at", "_run_id")  # differ from run to run


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines_landing")
    generate(str(out), days=2, seed=1, scale=0.01)
    return out


@pytest.fixture(scope="module")
def aws():
    """moto in a process of its own (S3, Secrets Manager, EMR Serverless, CloudWatch Logs), with
    this process's standard AWS variables pointed at it."""
    with moto_process() as server:
        yield server


def _upload(aws, landing, uri: str) -> None:
    """The landed files under ``s3://bucket/prefix`` (the bucket created)."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    s3 = aws.client()
    s3.create_bucket(Bucket=bucket)
    for f in sorted(p for p in landing.rglob("*") if p.is_file()):
        s3.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(landing).as_posix()}")


def _lake_keys(aws, uri: str) -> list[str]:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    pages = aws.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return [o["Key"][len(prefix) + 1:] for page in pages for o in page.get("Contents", [])]


def _rates(lake, landing_root: str):
    """silver/rates of a lake without the per-run lineage, ``_source_file`` relative to the
    landing root (an s3:// prefix or a folder), rows in a canonical order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = read_table(lake, "silver", "rates")
    t = t.drop([c for c in LINEAGE if c in t.column_names])
    if "_source_file" in t.column_names:
        i = t.column_names.index("_source_file")
        rel = pc.replace_substring_regex(t.column(i), "^" + re.escape(landing_root.rstrip("/") + "/"), "")
        assert all(v is None or "://" not in v and not v.startswith("/") for v in rel.to_pylist()), landing_root
        t = t.set_column(i, pa.field("_source_file", pa.string()), rel)
    return t.sort_by([(c, "ascending") for c in t.column_names]).combine_chunks()


@pytest.fixture(scope="module")
def cluster(aws, tmp_path_factory):
    """A Spark standalone master and worker (2 cores); yields (master URL, master UI URL).
    Started after moto: its executors get the AWS credentials from the worker's environment
    (as a cluster's nodes get them from their instance profile)."""
    with spark_standalone(tmp_path_factory.mktemp("spark_standalone"), cores=2, memory="3g") as urls:
        yield urls


def _apps(ui: str) -> list[str]:
    state = master_state(ui)
    return [a.get("name") for a in state.get("completedapps", []) + state.get("activeapps", [])]


@pytest.fixture(scope="module")
def staging(landing, aws, cluster, tmp_path_factory):
    """etl_all as staging runs it: ETL_ENV=staging on a Spark Connect server over the cluster,
    landing and lake in staging's S3 buckets, secrets from Secrets Manager, prod instance."""
    import psycopg2

    master, ui = cluster
    tmp = tmp_path_factory.mktemp("engines_staging")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "etl_assets/instance/dagster.prod.yaml", home / "dagster.yaml")
    nowhere = tmp / "no-spark-or-java-here"
    nowhere.mkdir()
    no_copies = tmp / "no-landing-copies-here"  # ETL_STAGING_DIR: created if anything staged a copy
    _upload(aws, landing, STAGING_LANDING)
    s3 = aws.client()
    s3.create_bucket(Bucket=STAGING_LAKE[len("s3://"):].split("/")[0])
    s3.create_bucket(Bucket="dagster-logs")
    aws.client("secretsmanager").create_secret(
        Name="etl/staging/pii", SecretString=json.dumps({"salt": SALT, "key": KEY}))
    # Only addresses are filled in: staging.yaml's own buckets, engine, executor kind and secrets.
    run_env = {
        "ETL_ENV": "staging",
        "ETL_S3_READ_MODE": "s3a",  # Spark reads the landed objects itself (not boto3 copies)
        "ETL_STAGING_DIR": str(no_copies),
        # The in-process executor keeps the module's time down: the multiprocess executor's step
        # processes are the same thin clients (figures: .ci/bench-executors).
        "ETL_EXECUTOR": "in_process",
        "ETL_SPARK_SHUFFLE_PARTITIONS": "2",
        "ETL_SECRETS_ENDPOINT_URL": aws.endpoint,
        "AWS_ENDPOINT_URL": aws.endpoint,  # S3 (landing, lake, step logs), Secrets Manager
    }
    # the Connect server's executors run on the cluster; it holds all of the worker's cores
    server_conf = {"spark.executor.memory": "1g", "spark.cores.max": "2"}
    with postgres_server() as pg, spark_connect_server(tmp / "connect", master=master, conf=server_conf) as remote:
        env = clean_env({
            **run_env,
            "ETL_SPARK_REMOTE": remote,  # instead of staging.yaml's host name
            "SPARK_HOME": str(nowhere),  # a thin client: no Spark, no Java in the run's process
            "JAVA_HOME": str(nowhere),
            "DAGSTER_HOME": str(home),
            "DAGSTER_COMPUTE_LOG_BUCKET": "dagster-logs",
            "DAGSTER_PG_HOST": pg["host"],
            "DAGSTER_PG_PORT": str(pg["port"]),
            "DAGSTER_PG_USER": pg["user"],
            "DAGSTER_PG_PASSWORD": pg["password"],
            "DAGSTER_PG_DB": pg["db"],
        })
        settings = load_settings(env)
        took = run_etl_all(env, tmp / "run.log")
        apps = _apps(ui)
        with psycopg2.connect(host=pg["host"], port=pg["port"], user=pg["user"], dbname=pg["db"]) as conn:
            cur = conn.cursor()
            cur.execute("SELECT pipeline_name, status FROM runs")
            runs = cur.fetchall()
            cur.execute("SELECT dagster_event_type, count(*) FROM event_logs GROUP BY 1")
            counts = dict(cur.fetchall())
            cur.execute("SELECT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
            keys = [json.loads(r[0]) for r in cur.fetchall() if r[0]]  # ["gold", "x"] or {"path": [...]}
            materialized = {"/".join(k["path"] if isinstance(k, dict) else k) for k in keys}
            cur.execute("SELECT count(*) FROM event_logs WHERE event LIKE %s OR event LIKE %s",
                        (f"%{SALT}%", f"%{KEY}%"))
            leaks = cur.fetchone()[0]
    objects = s3.list_objects_v2(Bucket="dagster-logs").get("Contents", [])
    step_logs = "".join(
        s3.get_object(Bucket="dagster-logs", Key=o["Key"])["Body"].read().decode(errors="replace") for o in objects
    )
    print(f"staging etl_all (Spark Connect over the standalone cluster, S3 lake, PostgreSQL instance): {took:.1f}s")
    return SimpleNamespace(settings=settings, lake=settings.lake_uri, landing=settings.landing_uri, apps=apps,
                           no_copies=no_copies, lake_keys=_lake_keys(aws, settings.lake_uri),
                           runs=runs, counts=counts, materialized=materialized, leaks=leaks,
                           s3_keys=[o["Key"] for o in objects], step_logs=step_logs,
                           run_log=(tmp / "run.log").read_text(errors="replace"))


def test_staging_runs_etl_all_on_spark_connect_with_landing_and_lake_in_s3(staging):
    s = staging.settings
    assert (s.landing_uri, s.lake_uri) == (STAGING_LANDING, STAGING_LAKE), "staging.yaml's own buckets"
    assert (s.spark.engine, s.pii_source) == ("connect", "aws_secretsmanager")
    assert "Spark Connect server" in staging.apps, "the Connect server's executors run on the cluster"
    # Delta tables in the lake bucket, written by the server's Spark through s3a
    for table in [f"gold/{t}" for t in GOLD_TABLES] + ["bronze/orders", "silver/orders", "silver/rates"]:
        assert any(k.startswith(f"{table}/_delta_log/") for k in staging.lake_keys), table
        assert any(k.startswith(f"{table}/") and k.endswith(".parquet") for k in staging.lake_keys), table
    assert not [k for k in staging.lake_keys if k.startswith("_staging/")], "staged files left in the bucket"
    assert read_table(staging.lake, "gold", "fact_orders").num_rows > 0
    assert read_table(staging.lake, "silver", "orders").num_rows > 0
    # the landed objects were read in place: nothing staged on a local disk
    assert not staging.no_copies.exists(), "landed objects were copied to a local folder"
    sources = set(read_table(staging.lake, "bronze", "orders").column("_source_file").to_pylist())
    assert sources and all(v.startswith(f"{STAGING_LANDING}/") for v in sources), sorted(sources)[:3]


def test_prod_instance_on_postgres_stores_the_run_events_and_checks(staging):
    from etl_assets.definitions import build_definitions

    counts = staging.counts
    assert staging.runs == [("etl_all", "SUCCESS")]
    assert counts.get("RUN_SUCCESS", counts.get("PIPELINE_SUCCESS")) == 1, counts
    assert counts.get("STEP_SUCCESS", 0) >= 20, counts
    assert {f"gold/{t}" for t in GOLD_TABLES} | {"silver/orders", "bronze/orders"} <= staging.materialized
    n_checks = len(build_definitions(load_settings({})).resolve_asset_graph().asset_check_keys)
    assert n_checks > 0, "the definitions have no asset check"
    assert counts.get("ASSET_CHECK_EVALUATION", 0) > 0, counts
    assert staging.s3_keys, "no step logs uploaded to S3"
    # the secrets came from Secrets Manager and are nowhere: event log, step logs, run output
    assert staging.leaks == 0
    assert SALT not in staging.step_logs and KEY not in staging.step_logs
    assert SALT not in staging.run_log and KEY not in staging.run_log


def _env(landing, lake, **extra) -> dict:
    return clean_env({"ETL_LANDING_URI": str(landing), "ETL_LAKE_URI": str(lake),
                      "ETL_SPARK_SHUFFLE_PARTITIONS": "2", **PII_ENV, **extra})


def test_classic_driver_on_the_standalone_cluster(landing, staging, cluster, tmp_path):
    """ETL_SPARK_MASTER=spark://...: the driver in the Dagster process, executors on the worker
    (a local landing and lake: the S3 side is staging's and prod's)."""
    master, ui = cluster
    lake = tmp_path / "lake"
    env = _env(landing, lake, ETL_SPARK_MASTER=master, ETL_SPARK_DRIVER_MEMORY="1g", SPARK_LOCAL_IP="127.0.0.1",
               ETL_SPARK_CONF="spark.executor.memory=1g,spark.cores.max=2")
    took = run_etl_all(env, tmp_path / "classic.log", select="bronze/rates,silver/rates,quarantine/rates")
    assert "etl_assets" in _apps(ui), "no etl_assets application on the master"
    a, b = _rates(staging.lake, staging.landing), _rates(lake, str(landing))
    assert b.num_rows > 0 and a.equals(b)
    print(f"bronze+silver rates with a classic driver on the standalone cluster: {took:.1f}s")


# -- EMR ---------------------------------------------------------------------------------------


def _driver_env_of(spark_submit_parameters: str) -> dict[str, str]:
    """``--conf spark.emr-serverless.driverEnv.K=V`` entries -> ``{K: V}``."""
    words = shlex.split(spark_submit_parameters)
    confs = [words[i + 1] for i, w in enumerate(words) if w == "--conf"]
    prefix = "spark.emr-serverless.driverEnv."
    return dict(c[len(prefix):].split("=", 1) for c in confs if c.startswith(prefix))


def test_emr_pipes_client_runs_the_shipped_entry_point(landing, staging, aws, tmp_path, monkeypatch):
    """prod with AWS on moto: prod.yaml's own landing and lake buckets, only the EMR ids and the
    endpoints filled in. The selection is one EMR Serverless job run of the shipped entry point.
    A fake EMR (a hook on StartJobRun) runs the submitted entry point with the submitted driver
    environment on local Spark (standing in for EMR Serverless) under dagster_pipes -- it reads
    the landed objects through s3a and writes the Delta tables to the lake bucket -- and ships its
    stdout to CloudWatch, where the Pipes client reads the materializations back."""
    import boto3
    from dagster import AssetKey

    from etl_assets.definitions import build_definitions
    from etl_assets.emr import launch

    selection = ["bronze/rates", "silver/rates"]
    submitted: list[dict] = []
    driver_copies = tmp_path / "no-landing-copies-on-the-driver"
    for k, v in AWS_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    monkeypatch.setenv("ETL_S3_READ_MODE", "stage")  # this host's choice: not the EMR driver's (always s3a)
    _upload(aws, landing, PROD_LANDING)
    aws.client().create_bucket(Bucket=PROD_LAKE[len("s3://"):].split("/")[0])
    boto3.client("secretsmanager").create_secret(
        Name="etl/prod/pii", SecretString=json.dumps({"salt": SALT, "key": KEY}))
    app_id = boto3.client("emr-serverless").create_application(
        name="etl_assets", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]
    boto3.client("logs").create_log_group(logGroupName=LOG_GROUP)
    settings = load_settings({  # prod.yaml, its EMR ids filled in (Terraform outputs in a deployment)
        "ETL_ENV": "prod",
        "ETL_EMR_APPLICATION_ID": app_id,
        "ETL_EMR_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/etl-emr",
        "ETL_SECRETS_ENDPOINT_URL": aws.endpoint,
    })
    assert settings.spark.engine == "emr" and settings.pii_source == "aws_secretsmanager"
    assert (settings.landing_uri, settings.lake_uri) == (PROD_LANDING, PROD_LAKE), "prod.yaml's own buckets"

    def record_params(params, **_):
        submitted.append(json.loads(json.dumps(params)))

    def fake_emr(parsed, **_):
        """What EMR does with the job: run the entry point with the driver env; logs to CloudWatch."""
        driver = submitted[-1]["jobDriver"]["sparkSubmit"]
        assert driver["entryPoint"] == f"{settings.emr.artifacts_uri}/entrypoint.py"
        env = clean_env({
            **_driver_env_of(driver["sparkSubmitParameters"]),
            "PYSPARK_PYTHON": PYTHON,  # ./environment/bin/python: the unpacked archive on EMR
            "PYSPARK_DRIVER_PYTHON": PYTHON,
            "AWS_ENDPOINT_URL": aws.endpoint,  # EMR's own network to S3 and Secrets Manager
            "ETL_SECRETS_ENDPOINT_URL": aws.endpoint,  # the driver reads the secrets itself
            "ETL_SPARK_SHUFFLE_PARTITIONS": "2",
            "ETL_STAGING_DIR": str(driver_copies),  # created if the driver staged landed copies
        })
        proc = subprocess.run(
            [PYTHON, str(launch.ENTRYPOINT), "--master", "local[2]", *driver["entryPointArguments"]],
            env=env, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=600,
        )
        (tmp_path / "driver.stderr").write_text(proc.stderr)
        logs = boto3.client("logs")
        base = f"/applications/{parsed['applicationId']}/jobs/{parsed['jobRunId']}/SPARK_DRIVER"
        for stream, text in (("stdout", proc.stdout), ("stderr", proc.stderr[-100_000:])):
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=f"{base}/{stream}")
            lines = [ln for ln in text.splitlines() if ln.strip()] or ["(empty)"]
            now = int(time.time() * 1000)
            for i in range(0, len(lines), 1000):
                logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=f"{base}/{stream}",
                                    logEvents=[{"timestamp": now, "message": ln} for ln in lines[i:i + 1000]])
        assert proc.returncode == 0, f"entry point failed:\n{proc.stderr[-4000:]}"

    real_build = launch.build_pipes_client

    def build_pipes_client(region, **kwargs):
        emr = boto3.client("emr-serverless", region_name=region)
        emr.meta.events.register("provide-client-params.emr-serverless.StartJobRun", record_params)
        emr.meta.events.register("after-call.emr-serverless.StartJobRun", fake_emr)
        return real_build(region, emr_client=emr, logs_client=boto3.client("logs", region_name=region),
                          poll_interval=0.2)

    monkeypatch.setattr(launch, "build_pipes_client", build_pipes_client)
    defs = build_definitions(settings)
    job = defs.resolve_job_def("etl_all")
    nodes = set(job.graph.node_dict)
    assert "lakehouse_on_emr" in nodes
    assert not any(n.startswith(("bronze__", "silver_", "gold__")) for n in nodes), nodes
    result = job.execute_in_process(asset_selection=[AssetKey.from_user_string(s) for s in selection],
                                    raise_on_error=False)

    assert len(submitted) == 1, "one EMR job run for the selection"
    params = submitted[0]
    driver = params["jobDriver"]["sparkSubmit"]
    assert (params["applicationId"], params["executionRoleArn"]) == (app_id, "arn:aws:iam::123456789012:role/etl-emr")
    assert params["configurationOverrides"]["monitoringConfiguration"]["cloudWatchLoggingConfiguration"] == {
        "enabled": True, "logGroupName": LOG_GROUP}
    assert params["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"]
    assert driver["entryPointArguments"] == ["--select", ",".join(selection)]
    submit = driver["sparkSubmitParameters"]
    assert f"spark.archives={settings.emr.artifacts_uri}/etl_assets_env.tar.gz#environment" in submit
    assert "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python" in submit
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in submit  # the lake is Delta
    assert "spark.jars=/usr/share/aws/delta/lib/delta-spark.jar," in submit  # EMR's own Delta jars
    denv = _driver_env_of(submit)
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= set(denv), "Pipes bootstrap"
    assert (denv["ETL_ENV"], denv["ETL_SPARK_ENGINE"]) == ("prod", "classic")
    assert (denv["ETL_LANDING_URI"], denv["ETL_LAKE_URI"]) == (PROD_LANDING, PROD_LAKE)
    assert "ETL_S3_READ_MODE" not in denv  # the driver always reads s3a (a local copy is no use on EMR)
    assert SALT not in json.dumps(params) and KEY not in json.dumps(params), "secrets are not job parameters"
    assert any(k.startswith("dagster") for k in params["tags"]), params["tags"]

    stderr = (tmp_path / "driver.stderr").read_text()[-4000:] if (tmp_path / "driver.stderr").exists() else ""
    assert result.success, stderr
    mats = {e.asset_key.to_user_string(): e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()}
    assert set(mats) == set(selection), "every selected table reported through Pipes"
    # the tables are Delta in prod's lake bucket, read back from S3 with deltalake
    keys = _lake_keys(aws, PROD_LAKE)
    assert any(k.startswith("silver/rates/_delta_log/") for k in keys), keys[:20]
    assert not driver_copies.exists(), "the driver copied landed objects to its local disk"
    rows = read_table(PROD_LAKE, "silver", "rates").num_rows
    assert rows > 0 and mats["silver/rates"].metadata["dagster/row_count"].value == rows
    # the same code as staging's run: the same silver rows (per-run lineage aside)
    assert _rates(PROD_LAKE, PROD_LANDING).equals(_rates(staging.lake, staging.landing))
