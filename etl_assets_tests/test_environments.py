"""Environments: ``ETL_ENV`` selects a YAML file of the package, environment variables override
it, and everything is validated at load time with errors that name the setting; staging/prod
read the PII salt and key from AWS Secrets Manager (moto's server here) and never log them.
(The prod Dagster instance on a real PostgreSQL server is exercised in ``test_engines.py``,
whose reference run uses it.)
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from etl_assets import secrets as S
from etl_assets.environments import ENV_DIR, OVERRIDES, load_environment
from etl_assets.settings import DEV_PII_KEY, DEV_PII_SALT, REPO_ROOT, SettingsError, load_settings
from etl_assets_tests.servers import AWS_TEST_ENV, moto_server

SALT = "staging-salt-from-secrets-manager"
KEY = "fedcba9876543210fedcba9876543210"  # 32 characters
EMR_IDS = {
    "ETL_EMR_APPLICATION_ID": "00fabc123",
    "ETL_EMR_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/etl-emr",
}


# -- YAML + overrides --------------------------------------------------------------------------


def test_every_environment_has_a_yaml_and_every_override_a_key():
    for env in ("local", "staging", "prod"):
        cfg = load_environment(env, {})
        assert cfg.file == ENV_DIR / f"{env}.yaml"
        for var, (dotted, _) in OVERRIDES.items():
            head = dotted.split(".")[0]
            if head != "emr" or env == "prod":
                assert head in cfg.values, f"{env}.yaml has no {head!r} section for {var}"


def test_local_needs_no_configuration_and_keeps_todays_defaults():
    from etl_assets.definitions import build_resources
    from etl_assets.resources import SparkResource

    s = load_settings({})
    assert s.env == "local"
    assert (s.landing_uri, s.lake_uri) == (str(REPO_ROOT / "data/landing"), str(REPO_ROOT / "data/lake"))
    assert (s.pii_salt, s.pii_key) == (DEV_PII_SALT, DEV_PII_KEY)
    assert (s.spark.engine, s.spark.master, s.spark.remote) == ("classic", "local[*]", None)
    assert s.executor.kind == "in_process"
    res = build_resources(s)
    assert isinstance(res["spark"], SparkResource) and res["spark"].master == "local[*]" and res["spark"].remote is None
    assert res["platform"].pii.salt == DEV_PII_SALT and "emr" not in res


def test_environment_variables_override_the_yaml():
    s = load_settings({"ETL_SPARK_MASTER": "spark://10.0.0.5:7077", "ETL_SPARK_CONF": "spark.executor.memory=2g, a.b=c",
                       "ETL_LAKE_URI": "file:///srv/lake", "ETL_SPARK_SHUFFLE_PARTITIONS": "16"})
    assert (s.spark.engine, s.spark.master, s.spark.shuffle_partitions) == ("classic", "spark://10.0.0.5:7077", 16)
    assert dict(s.spark.conf) == {"spark.executor.memory": "2g", "a.b": "c"}
    assert s.lake_uri == "file:///srv/lake" and s.executor.kind == "in_process"
    # sc:// selects Spark Connect; auto executor -> multiprocess (thin clients, one shared engine)
    s = load_settings({"ETL_SPARK_REMOTE": "sc://spark.internal:15002"})
    assert (s.spark.engine, s.spark.remote, s.executor.kind) == ("connect", "sc://spark.internal:15002", "multiprocess")
    s = load_settings({"ETL_SPARK_REMOTE": "sc://127.0.0.1:15002", "ETL_EXECUTOR": "in_process"})
    assert s.executor.kind == "in_process"
    # staging's Connect engine, overridden to an embedded engine for a local smoke run
    s = load_settings({"ETL_ENV": "staging", "ETL_SPARK_MASTER": "local[2]", "ETL_PII_SALT": SALT, "ETL_PII_KEY": KEY})
    assert (s.spark.engine, s.spark.master, s.executor.kind) == ("classic", "local[2]", "in_process")


def test_executor_follows_the_engine_in_the_definitions():
    from etl_assets.definitions import build_definitions

    assert build_definitions(load_settings({})).resolve_job_def("etl_all").executor_def.name == "in_process"
    connect = load_settings({"ETL_SPARK_REMOTE": "sc://127.0.0.1:15002"})
    assert build_definitions(connect).resolve_job_def("etl_all").executor_def.name == "multiprocess"


def test_config_file_outside_the_package(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("landing_uri: /srv/landing\nlake_uri: s3://bucket\nspark: {engine: classic, master: 'local[3]'}\n")
    s = load_settings({"ETL_CONFIG_FILE": str(f)})
    assert (s.landing_uri, s.lake_uri, s.spark.master) == ("/srv/landing", "s3://bucket", "local[3]")


@pytest.mark.parametrize(
    "environ, yaml_text, expected",
    [
        ({"ETL_LAKE_URI": "ftp://host/lake"}, None, "ETL_LAKE_URI: unsupported URI"),
        ({"ETL_LANDING_URI": "s3:///no-bucket"}, None, "ETL_LANDING_URI: malformed S3 URI"),
        ({}, "lake_uri: 'hdfs://nn/lake'\n", "site.yaml: lake_uri (or ETL_LAKE_URI): unsupported URI"),
        ({"ETL_SPARK_REMOTE": "http://spark:15002"}, None,
         "ETL_SPARK_REMOTE='http://spark:15002': not a Spark Connect URL"),
        ({"ETL_SPARK_MASTER": "spark:/typo"}, None, "ETL_SPARK_MASTER='spark:/typo': not a Spark master URL"),
        ({"ETL_SPARK_ENGINE": "connect"}, None, "local.yaml: spark.remote (or ETL_SPARK_REMOTE) is required"),
        ({"ETL_SPARK_ENGINE": "flink"}, None, "ETL_SPARK_ENGINE='flink': expected one of classic, connect, emr"),
        ({"ETL_SPARK_SHUFFLE_PARTITIONS": "many"}, None, "ETL_SPARK_SHUFFLE_PARTITIONS='many': expected an integer"),
        ({"ETL_SPARK_CONF": "spark.x"}, None, "ETL_SPARK_CONF: expected key=value pairs"),
        ({"ETL_EXECUTOR": "threads"}, None, "ETL_EXECUTOR='threads'"),
        ({"ETL_PII_KEY": "short"}, None, "ETL_PII_KEY must be 16, 24 or 32 ASCII characters (got 5 characters)"),
        ({"ETL_ENV": "qa"}, None, "ETL_ENV='qa': expected one of local, staging, prod"),
        ({}, "spark: [1, 2\n", "invalid YAML"),
        ({"ETL_ENV": "staging", "ETL_SECRETS_PROVIDER": "dev"}, None, "ETL_SECRETS_PROVIDER=dev: development PII"),
        ({"ETL_ENV": "staging", "ETL_PII_SALT": DEV_PII_SALT, "ETL_PII_KEY": KEY}, None,
         "refuses the documented development"),
        ({"ETL_ENV": "staging", "ETL_PII_SALT": SALT}, None, "ETL_PII_SALT is set but ETL_PII_KEY is not"),
        ({"ETL_ENV": "staging", "ETL_SECRETS_PROVIDER": "env"}, None, "ETL_PII_SALT, ETL_PII_KEY not set"),
        ({"ETL_ENV": "prod", "ETL_PII_SALT": SALT, "ETL_PII_KEY": KEY}, None,
         "prod.yaml: emr.application_id (or ETL_EMR_APPLICATION_ID), prod.yaml: emr.execution_role_arn"),
        ({"ETL_ENV": "prod", **EMR_IDS, "ETL_EMR_ARTIFACTS_URI": "/opt/artifacts",
          "ETL_PII_SALT": SALT, "ETL_PII_KEY": KEY},
         None, "ETL_EMR_ARTIFACTS_URI='/opt/artifacts': expected s3://"),
        ({"ETL_ENV": "prod", **EMR_IDS, "ETL_SECRETS_PROVIDER": "env", "ETL_PII_SALT": SALT, "ETL_PII_KEY": KEY},
         None, "the EMR engine's driver reads the PII salt/key from AWS Secrets Manager"),
    ],
)
def test_invalid_configuration_is_a_load_error_naming_the_setting(tmp_path, environ, yaml_text, expected):
    environ = dict(environ)
    if yaml_text is not None:
        f = tmp_path / "site.yaml"
        f.write_text(yaml_text)
        environ["ETL_CONFIG_FILE"] = str(f)
    with pytest.raises(SettingsError) as e:
        load_settings(environ)
    assert expected in str(e.value)


def test_prod_definitions_run_the_tables_on_emr():
    from dagster import AssetKey

    from etl_assets.definitions import build_definitions
    from etl_assets.emr.launch import EmrServerlessRunner

    s = load_settings({"ETL_ENV": "prod", **EMR_IDS, "ETL_PII_SALT": SALT, "ETL_PII_KEY": KEY})
    assert s.spark.engine == "emr" and s.emr.artifacts_uri.startswith("s3://")
    defs = build_definitions(s)
    emr = defs.resources["emr"]
    assert isinstance(emr, EmrServerlessRunner) and emr.application_id == "00fabc123"
    assert SALT not in json.dumps(emr.driver_env) and KEY not in json.dumps(emr.driver_env)
    node = defs.resolve_assets_def(AssetKey(["gold", "fact_orders"])).node_def.name
    assert node == "lakehouse_on_emr"
    assert defs.resolve_assets_def(AssetKey(["bronze", "orders"])).node_def.name == node


def test_instance_yamls(tmp_path, monkeypatch):
    from dagster import DagsterInstance
    from dagster._core.instance.config import dagster_instance_config

    home = tmp_path / "local"
    home.mkdir()
    shutil.copy(REPO_ROOT / "etl_assets/instance/dagster.local.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as inst:
        assert type(inst.run_storage).__name__ == "SqliteRunStorage"
        assert str(home) in inst.root_directory
    prod = tmp_path / "prod"
    prod.mkdir()
    shutil.copy(REPO_ROOT / "etl_assets/instance/dagster.prod.yaml", prod / "dagster.yaml")
    cfg, _ = dagster_instance_config(str(prod))
    assert "postgres" in cfg["storage"]
    assert cfg["compute_logs"]["class"] == "S3ComputeLogManager"
    assert cfg["concurrency"]["runs"]["max_concurrent_runs"] > 0


# -- Secrets Manager (moto) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws():
    """moto's server with the staging secrets, and AWS settings for this process."""
    import boto3

    mp = pytest.MonkeyPatch()
    for k, v in AWS_TEST_ENV.items():
        mp.setenv(k, v)
    with moto_server() as url:
        mp.setenv("AWS_ENDPOINT_URL", url)
        sm = boto3.client("secretsmanager")
        sm.create_secret(Name="etl/staging/pii", SecretString=json.dumps({"salt": SALT, "key": KEY}))
        sm.create_secret(Name="etl/staging/pii-salt-plain", SecretString=SALT)
        sm.create_secret(Name="etl/staging/bad-key", SecretString=json.dumps({"salt": SALT, "key": "too-short"}))
        S.clear_cache()
        yield url
        S.clear_cache()
    mp.undo()


def _staging(aws_url, **extra) -> dict:
    return {"ETL_ENV": "staging", "ETL_SECRETS_ENDPOINT_URL": aws_url, "ETL_SPARK_MASTER": "local[2]", **extra}


def test_staging_reads_the_pii_secrets_from_secrets_manager(aws, caplog):
    from etl_assets.definitions import build_resources

    caplog.set_level(logging.DEBUG)
    s = load_settings(_staging(aws))
    assert (s.pii_salt, s.pii_key, s.pii_source) == (SALT, KEY, "aws_secretsmanager")
    assert SALT not in repr(s) and KEY not in str(s)
    platform = build_resources(s)["platform"]
    # the resource (shown in the Dagster UI) holds the secrets' names, not their values
    shown = json.dumps(platform.model_dump() if hasattr(platform, "model_dump") else platform.dict(), default=str)
    assert SALT not in shown and KEY not in shown and "etl/staging/pii#salt" in shown
    S.clear_cache()
    assert platform.pii.salt == SALT and platform.pii.key == KEY  # resolved in the step's process
    assert SALT not in caplog.text and KEY not in caplog.text, "a secret reached a log"


def test_secret_name_overrides_and_whole_string_secrets(aws):
    s = load_settings(_staging(aws, ETL_PII_SALT_SECRET="etl/staging/pii-salt-plain"))
    assert (s.pii_salt, s.pii_key) == (SALT, KEY)


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"ETL_PII_SALT_SECRET": "etl/staging/missing"},
         "ETL_PII_SALT (ETL_PII_SALT_SECRET): secret 'etl/staging/missing' not found in AWS Secrets Manager"),
        ({"ETL_PII_KEY_SECRET": "etl/staging/pii#aes_key"},
         "ETL_PII_KEY (ETL_PII_KEY_SECRET): secret 'etl/staging/pii' has no field 'aes_key'"),
        ({"ETL_PII_SALT_SECRET": "etl/staging/pii-salt-plain#salt"}, "is not JSON"),
        ({"ETL_PII_KEY_SECRET": "etl/staging/bad-key#key"}, "ETL_PII_KEY must be 16, 24 or 32 ASCII characters"),
    ],
)
def test_a_missing_or_bad_secret_is_a_clear_start_up_error(aws, extra, expected):
    with pytest.raises(SettingsError) as e:
        load_settings(_staging(aws, **extra))
    assert expected in str(e.value)
    assert SALT not in str(e.value) and KEY not in str(e.value) and "too-short" not in str(e.value)


def test_unreachable_secrets_manager_is_a_clear_error():
    from etl_assets_tests.servers import free_port

    S.clear_cache()
    env = _staging(f"http://127.0.0.1:{free_port()}")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in AWS_TEST_ENV.items():
            mp.setenv(k, v)
        mp.setenv("AWS_MAX_ATTEMPTS", "1")
        with pytest.raises(SettingsError) as e:
            load_settings(env)
    assert "ETL_PII_SALT" in str(e.value) and "cannot reach AWS Secrets Manager" in str(e.value)
