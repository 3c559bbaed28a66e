"""Shared fixtures: one SparkSession per test process, temporary landing/lake folders."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("ETL_SPARK_LOG_LEVEL", "ERROR")
os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)

from etl_assets.resources import SparkResource  # noqa: E402
from etl_assets.transforms.silver import Pii  # noqa: E402

TEST_PII = Pii(salt="test-salt", key="0123456789abcdef")  # AES-128 key for tests


@pytest.fixture(scope="session")
def spark():
    # Two shuffle partitions: the unit-test frames are tiny.
    session = SparkResource(master="local[2]", shuffle_partitions=2, driver_memory="2g").get_session()
    yield session


@pytest.fixture(scope="session")
def pii() -> Pii:
    return TEST_PII


# -- one real etl_all run shared by the PII-leak, audit and disaster-recovery tests -----------

#: distinctive secrets of that run: a leak of either is unmistakable
LAKE_RUN_SALT = "zq-salt-7f3a9c1e-never-print-me"
LAKE_RUN_KEY = "KQ-key-4b8e2d6f-never-print-me!!"  # 32 ASCII characters: AES-256
LAKE_RUN_USER = "ops-alice"


@pytest.fixture(scope="session")
def lake_run(tmp_path_factory, spark):
    """``etl_all`` on tiny generated data into a real on-disk Dagster instance (``home``: event
    log SQLite, run storage, compute logs), the secrets read from the environment as in
    production (``pii_source=env``), launched as ``dagster/user`` = ``ops-alice``; then the alert
    sensor evaluated once against that instance, writing its JSON-lines alert log."""
    import shutil
    from pathlib import Path

    from dagster import DagsterInstance, build_sensor_context

    from etl_assets.alerts import asset_check_failure_alerts
    from etl_assets.definitions import build_definitions
    from etl_assets.sample_data import generate
    from etl_assets.settings import load_settings

    root = tmp_path_factory.mktemp("lake_run")
    landing, lake, home = root / "landing", root / "lake", root / "dagster_home"
    alert_log = root / "alerts.jsonl"
    generate(landing, days=2, seed=23, scale=0.01)
    home.mkdir()
    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / "etl_assets" / "instance" / "dagster.local.yaml", home / "dagster.yaml")
    env = {
        "ETL_ENV": "local",
        "ETL_LANDING_URI": str(landing),
        "ETL_LAKE_URI": str(lake),
        "ETL_PII_SALT": LAKE_RUN_SALT,
        "ETL_PII_KEY": LAKE_RUN_KEY,
        "ETL_SPARK_SHUFFLE_PARTITIONS": "2",
        "ETL_ALERT_LOG": str(alert_log),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = load_settings()
        assert settings.pii_source == "env"
        instance = DagsterInstance.from_config(str(home))
        job = build_definitions(settings).resolve_job_def("etl_all")
        result = job.execute_in_process(instance=instance, tags={"dagster/user": LAKE_RUN_USER}, raise_on_error=False)
        asset_check_failure_alerts.evaluate_tick(build_sensor_context(instance=instance))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return dict(result=result, root=root, landing=landing, lake=lake, home=home, alert_log=alert_log,
                instance=instance, salt=LAKE_RUN_SALT, key=LAKE_RUN_KEY, user=LAKE_RUN_USER, env=env)
