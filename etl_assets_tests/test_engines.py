"""The same asset code on every engine and on the production Dagster instance.

- The reference run: ``etl_all`` on embedded Spark, staging-style (PII secrets from AWS Secrets
  Manager on moto) with the prod ``dagster.yaml``: runs, events and check results in a real
  PostgreSQL server, step logs in S3 (moto).
- A Spark standalone cluster (master + worker) serving a Spark Connect server: ``etl_all``
  (its process a thin client that cannot start a JVM) publishes gold tables equal to the
  reference's; a classic driver (``ETL_SPARK_MASTER=spark://``) on the same cluster builds
  bronze+silver rates equal to the reference's. (One full run for both engines keeps the
  file's time down: each full etl_all costs 2-3 CPU-minutes with the asset checks.)
- EMR: the Pipes client submits the shipped entry point with the right job parameters; a fake
  EMR (AWS on moto) runs it on local Spark and Dagster reads the materializations back from
  CloudWatch.

Servers are started and stopped here, on 127.0.0.1 (``servers.py``). Every ``etl_all`` run is a
``dagster job execute`` subprocess, so this process's SparkSession is untouched.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest

from etl_assets.registry import GOLD_TABLES
from etl_assets.sample_data import generate
from etl_assets.settings import load_settings
from etl_assets_tests.servers import (
    AWS_TEST_ENV,
    PYTHON,
    REPO_ROOT,
    clean_env,
    master_state,
    moto_server,
    postgres_server,
    read_table,
    run_etl_all,
    spark_connect_server,
    spark_standalone,
    table_differences,
)

pytestmark = pytest.mark.slow  # whole runs on every engine: `make test-slow`

SALT = "engines-salt-from-the-secret-store"
KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # 32 ASCII characters
PII_ENV = {"ETL_PII_SALT": SALT, "ETL_PII_KEY": KEY}
LOG_GROUP = "/aws/emr-serverless/etl_assets"


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines_landing")
    generate(str(out), days=2, seed=1, scale=0.01)
    return out


def _aws(url: str) -> dict:
    return dict(endpoint_url=url, region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def reference(landing, tmp_path_factory):
    """etl_all on embedded Spark, ETL_ENV=staging (secrets from Secrets Manager), prod instance."""
    import boto3
    import psycopg2

    tmp = tmp_path_factory.mktemp("engines_reference")
    lake, home = tmp / "lake", tmp / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "etl_assets/instance/dagster.prod.yaml", home / "dagster.yaml")
    with postgres_server() as pg, moto_server() as aws:
        boto3.client("secretsmanager", **_aws(aws)).create_secret(
            Name="etl/staging/pii", SecretString=json.dumps({"salt": SALT, "key": KEY}))
        s3 = boto3.client("s3", **_aws(aws))
        s3.create_bucket(Bucket="dagster-logs", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        env = clean_env({
            "ETL_ENV": "staging",
            "ETL_LANDING_URI": str(landing),
            "ETL_LAKE_URI": str(lake),
            "ETL_SPARK_MASTER": "local[2]",  # instead of staging.yaml's Connect server
            "ETL_SPARK_SHUFFLE_PARTITIONS": "2",
            "ETL_SPARK_DRIVER_MEMORY": "2g",
            "ETL_SECRETS_ENDPOINT_URL": aws,
            "AWS_ENDPOINT_URL_S3": aws,  # compute logs
            "DAGSTER_HOME": str(home),
            "DAGSTER_COMPUTE_LOG_BUCKET": "dagster-logs",
            "DAGSTER_PG_HOST": pg["host"],
            "DAGSTER_PG_PORT": str(pg["port"]),
            "DAGSTER_PG_USER": pg["user"],
            "DAGSTER_PG_PASSWORD": pg["password"],
            "DAGSTER_PG_DB": pg["db"],
        })
        took = run_etl_all(env, tmp / "run.log")
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
    print(f"reference etl_all (embedded Spark, PostgreSQL instance): {took:.1f}s")
    return SimpleNamespace(lake=lake, runs=runs, counts=counts, materialized=materialized, leaks=leaks,
                           s3_keys=[o["Key"] for o in objects], step_logs=step_logs,
                           run_log=(tmp / "run.log").read_text(errors="replace"))


def test_prod_instance_on_postgres_stores_the_run_events_and_checks(reference):
    from etl_assets.definitions import build_definitions

    counts = reference.counts
    assert reference.runs == [("etl_all", "SUCCESS")]
    assert counts.get("RUN_SUCCESS", counts.get("PIPELINE_SUCCESS")) == 1, counts
    assert counts.get("STEP_SUCCESS", 0) >= 20, counts
    assert {f"gold/{t}" for t in GOLD_TABLES} | {"silver/orders", "bronze/orders"} <= reference.materialized
    n_checks = len(build_definitions(load_settings({})).resolve_asset_graph().asset_check_keys)
    assert n_checks > 0, "the definitions have no asset check"
    assert counts.get("ASSET_CHECK_EVALUATION", 0) > 0, counts
    assert reference.s3_keys, "no step logs uploaded to S3"
    # the secrets came from Secrets Manager and are nowhere: event log, step logs, run output
    assert reference.leaks == 0
    assert SALT not in reference.step_logs and KEY not in reference.step_logs
    assert SALT not in reference.run_log and KEY not in reference.run_log


def _env(landing, lake, **extra) -> dict:
    return clean_env({"ETL_LANDING_URI": str(landing), "ETL_LAKE_URI": str(lake),
                      "ETL_SPARK_SHUFFLE_PARTITIONS": "2", **PII_ENV, **extra})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Spark standalone master and worker (2 cores); yields (master URL, master UI URL)."""
    with spark_standalone(tmp_path_factory.mktemp("spark_standalone"), cores=2, memory="3g") as urls:
        yield urls


def _apps(ui: str) -> list[str]:
    state = master_state(ui)
    return [a.get("name") for a in state.get("completedapps", []) + state.get("activeapps", [])]


def test_etl_all_on_spark_connect_over_the_standalone_cluster_equals_the_reference(landing, reference, cluster,
                                                                                  tmp_path):
    """One etl_all for two engines: a Spark Connect server whose executors run on the standalone
    cluster. The run's process is a thin Connect client: it could not start a JVM (no Spark, no
    Java there). In-process executor here to keep the suite's time down: the multiprocess
    executor's step processes are the same thin clients (figures: .ci/bench-executors)."""
    master, ui = cluster
    lake = tmp_path / "lake"
    nowhere = tmp_path / "no-spark-or-java-here"
    nowhere.mkdir()
    server_conf = {"spark.executor.memory": "1g", "spark.cores.max": "2"}
    with spark_connect_server(tmp_path / "connect", master=master, conf=server_conf) as remote:
        env = _env(landing, lake, ETL_SPARK_REMOTE=remote, ETL_EXECUTOR="in_process",
                   SPARK_HOME=str(nowhere), JAVA_HOME=str(nowhere))
        took = run_etl_all(env, tmp_path / "connect.log")
        assert "Spark Connect server" in _apps(ui), "the Connect server's executors run on the cluster"
    assert table_differences(reference.lake, lake, "gold", GOLD_TABLES) == []
    print(f"etl_all on Spark Connect (standalone cluster): {took:.1f}s")


def test_classic_driver_on_the_standalone_cluster(landing, reference, cluster, tmp_path):
    """ETL_SPARK_MASTER=spark://...: the driver in the Dagster process, executors on the worker."""
    master, ui = cluster
    lake = tmp_path / "lake"
    env = _env(landing, lake, ETL_SPARK_MASTER=master, ETL_SPARK_DRIVER_MEMORY="1g", SPARK_LOCAL_IP="127.0.0.1",
               ETL_SPARK_CONF="spark.executor.memory=1g,spark.cores.max=2")
    took = run_etl_all(env, tmp_path / "classic.log", select="bronze/rates,silver/rates,quarantine/rates")
    assert "etl_assets" in _apps(ui), "no etl_assets application on the master"
    lineage = {"_ingested_at", "_run_id"}
    a, b = read_table(reference.lake, "silver", "rates"), read_table(lake, "silver", "rates")
    keep = [c for c in a.column_names if c not in lineage]
    assert b.num_rows > 0 and a.select(keep).equals(b.select(keep))
    print(f"bronze+silver rates with a classic driver on the standalone cluster: {took:.1f}s")


# -- EMR ---------------------------------------------------------------------------------------


def _driver_env_of(spark_submit_parameters: str) -> dict[str, str]:
    """``--conf spark.emr-serverless.driverEnv.K=V`` entries -> ``{K: V}``."""
    words = shlex.split(spark_submit_parameters)
    confs = [words[i + 1] for i, w in enumerate(words) if w == "--conf"]
    prefix = "spark.emr-serverless.driverEnv."
    return dict(c[len(prefix):].split("=", 1) for c in confs if c.startswith(prefix))


def test_emr_pipes_client_runs_the_shipped_entry_point(landing, reference, tmp_path, monkeypatch):
    """prod's EMR engine with AWS on moto: the selection is one EMR Serverless job run of the
    shipped entry point. A fake EMR (a hook on StartJobRun) runs the submitted entry point with
    the submitted driver environment on local Spark under dagster_pipes and ships its stdout to
    CloudWatch, where the Pipes client reads the materializations back."""
    import boto3
    from dagster import AssetKey

    from etl_assets.definitions import build_definitions
    from etl_assets.emr import launch

    lake = tmp_path / "lake"
    selection = ["bronze/rates", "silver/rates"]
    submitted: list[dict] = []
    with moto_server() as aws:
        for k, v in AWS_TEST_ENV.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
        boto3.client("secretsmanager").create_secret(
            Name="etl/prod/pii", SecretString=json.dumps({"salt": SALT, "key": KEY}))
        app_id = boto3.client("emr-serverless").create_application(
            name="etl_assets", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]
        boto3.client("logs").create_log_group(logGroupName=LOG_GROUP)
        settings = load_settings({
            "ETL_ENV": "prod",
            "ETL_LANDING_URI": str(landing),
            "ETL_LAKE_URI": str(lake),
            "ETL_EMR_APPLICATION_ID": app_id,
            "ETL_EMR_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/etl-emr",
            "ETL_SECRETS_ENDPOINT_URL": aws,
        })
        assert settings.spark.engine == "emr" and settings.pii_source == "aws_secretsmanager"

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
                "ETL_SECRETS_ENDPOINT_URL": aws,  # the driver reads the secrets itself
                "ETL_SPARK_SHUFFLE_PARTITIONS": "2",
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
    assert (denv["ETL_ENV"], denv["ETL_SPARK_ENGINE"], denv["ETL_LAKE_URI"]) == ("prod", "classic", str(lake))
    assert SALT not in json.dumps(params) and KEY not in json.dumps(params), "secrets are not job parameters"
    assert any(k.startswith("dagster") for k in params["tags"]), params["tags"]

    stderr = (tmp_path / "driver.stderr").read_text()[-4000:] if (tmp_path / "driver.stderr").exists() else ""
    assert result.success, stderr
    mats = {e.asset_key.to_user_string(): e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()}
    assert set(mats) == set(selection), "every selected table reported through Pipes"
    rows = read_table(lake, "silver", "rates").num_rows
    assert rows > 0 and mats["silver/rates"].metadata["dagster/row_count"].value == rows
    # the same code as the reference run: the same silver rows (lineage columns aside)
    lineage = {"_ingested_at", "_run_id"}
    a, b = read_table(reference.lake, "silver", "rates"), read_table(lake, "silver", "rates")
    keep = [c for c in a.column_names if c not in lineage]
    assert a.select(keep).equals(b.select(keep))
