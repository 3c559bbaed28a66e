"""Shared fixtures: one SparkSession per test process and ONE real ``etl_all`` run per session.

- ``spark``: the session every in-process test and run shares (``local[2]``, two shuffle
  partitions). After each test its runtime settings are put back as they were (``_spark_conf``),
  so no test sees settings another test or an in-process run left behind.
- ``lake_run``: ``etl_all`` over generated sample data plus the hostile corpus (``corpus.py``,
  in days of its own) into a real on-disk Dagster instance. Every test that only reads a run's
  output uses it (end to end, hostile input, lineage, audit, PII, disaster recovery, the UI); a
  test that changes the lake works on a copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("ETL_SPARK_LOG_LEVEL", "ERROR")
os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
# in-process runs build their SparkResource from the settings: the same session settings as ``spark``
os.environ.setdefault("ETL_SPARK_SHUFFLE_PARTITIONS", "2")

from dagster import DagsterInstance, build_sensor_context  # noqa: E402

from etl_assets.alerts import asset_check_failure_alerts  # noqa: E402
from etl_assets.definitions import build_definitions  # noqa: E402
from etl_assets.resources import SparkResource  # noqa: E402
from etl_assets.sample_data import generate  # noqa: E402
from etl_assets.settings import load_settings  # noqa: E402
from etl_assets.transforms.silver import Pii  # noqa: E402
from etl_assets_tests import corpus  # noqa: E402
from etl_assets_tests.helpers import materializations  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEST_PII = Pii(salt="test-salt", key="0123456789abcdef")  # AES-128 key for tests


def test_spark_resource() -> SparkResource:
    return SparkResource(master="local[2]", shuffle_partitions=2, driver_memory="2g")


test_spark_resource.__test__ = False  # a factory, not a test


_SHARED: dict = {}  # the session of the ``spark`` fixture and its settings when created


def _conf(session) -> dict[str, str]:
    get_all = session.conf.getAll
    return dict(get_all() if callable(get_all) else get_all)


@pytest.fixture(scope="session")
def spark():
    session = test_spark_resource().get_session()
    session.sparkContext.setLogLevel("ERROR")
    _SHARED.update(session=session, baseline=_conf(session))
    yield session


@pytest.fixture(autouse=True)
def _spark_conf():
    """After every test, put the shared session's runtime settings back to the ``spark``
    fixture's: a test or an in-process run that changed, added or unset one leaves nothing
    behind."""
    yield
    session, baseline = _SHARED.get("session"), _SHARED.get("baseline")
    if session is None:
        return
    try:
        current = _conf(session)
    except Exception:  # noqa: BLE001 - a test stopped the session: nothing to put back
        return
    for key in set(baseline) | set(current):
        if baseline.get(key) == current.get(key):
            continue
        try:
            if key in baseline:
                session.conf.set(key, baseline[key])
            else:
                session.conf.unset(key)
        except Exception:  # noqa: BLE001 - a static setting cannot change at run time anyway
            pass


@pytest.fixture(scope="session")
def pii() -> Pii:
    return TEST_PII


# -- one real etl_all run shared by every test that reads a run's output ------------------------

#: distinctive secrets of that run: a leak of either is unmistakable
LAKE_RUN_SALT = "zq-salt-7f3a9c1e-never-print-me"
LAKE_RUN_KEY = "KQ-key-4b8e2d6f-never-print-me!!"  # 32 ASCII characters: AES-256
LAKE_RUN_USER = "ops-alice"


@pytest.fixture(scope="session")
def lake_run(tmp_path_factory, spark):
    """``etl_all`` on tiny generated data (2 days) plus the hostile corpus (2 days of its own),
    into a real on-disk Dagster instance (``home``: SQLite event log, run storage, compute logs),
    the secrets read from the environment as in production (``pii_source=env``), launched as
    ``dagster/user`` = ``ops-alice``; then the alert sensor evaluated once against that
    instance, writing its JSON-lines alert log. Read only: copy what you change."""
    root = tmp_path_factory.mktemp("lake_run")
    landing, lake, home, sentinel = root / "landing", root / "lake", root / "dagster_home", root / "sentinel"
    alert_log = root / "alerts.jsonl"
    totals = generate(landing, days=2, seed=23, scale=0.01)
    corpus.build_corpus(landing, sentinel)
    before = {"landing": corpus.snapshot(landing), "sentinel": corpus.snapshot(sentinel)}
    home.mkdir()
    shutil.copy(REPO / "etl_assets" / "instance" / "dagster.local.yaml", home / "dagster.yaml")
    env = {
        "ETL_ENV": "local",
        "ETL_LANDING_URI": str(landing),
        "ETL_LAKE_URI": str(lake),
        "ETL_PII_SALT": LAKE_RUN_SALT,
        "ETL_PII_KEY": LAKE_RUN_KEY,
        "ETL_SPARK_SHUFFLE_PARTITIONS": "2",
        "ETL_ALERT_LOG": str(alert_log),
    }
    with pytest.MonkeyPatch.context() as mp:  # the variables are put back afterwards
        for k, v in env.items():
            mp.setenv(k, v)
        settings = load_settings()
        assert settings.pii_source == "env"
        instance = DagsterInstance.from_config(str(home))
        job = build_definitions(settings).resolve_job_def("etl_all")
        result = job.execute_in_process(instance=instance, tags={"dagster/user": LAKE_RUN_USER}, raise_on_error=False)
        asset_check_failure_alerts.evaluate_tick(build_sensor_context(instance=instance))
    checks = {(tuple(e.asset_key.path), e.check_name): e for e in result.get_asset_check_evaluations()}
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    return dict(result=result, root=root, landing=landing, lake=lake, home=home, alert_log=alert_log,
                sentinel=sentinel, before=before, totals=totals, instance=instance, settings=settings,
                mats=materializations(result), checks=checks, logs=logs,
                salt=LAKE_RUN_SALT, key=LAKE_RUN_KEY, pii=Pii(salt=LAKE_RUN_SALT, key=LAKE_RUN_KEY),
                user=LAKE_RUN_USER, env=env)


# -- suite policy: time limits, and no silent skip in CI -----------------------------------------

SLOW_TIMEOUT_S = 1200  # a whole-run test (make test-slow) without a limit of its own
#: the words a skip's reason must hold to be accepted in CI: it names why it cannot run there
CI_SKIP_MARK = "cannot run in CI:"


SHARED_RUN_TIMEOUT_S = 900  # a test that may be the first to ask for the shared run pays for it


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("timeout"):
            continue
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
        elif "lake_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(SHARED_RUN_TIMEOUT_S))


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unexplained_skips(terminalreporter) -> list[str]:
    out = []
    for rep in terminalreporter.stats.get("skipped", []):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if CI_SKIP_MARK not in reason:
            out.append(f"{rep.nodeid}: {reason}")
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _in_ci() and _unexplained_skips(terminalreporter):
        terminalreporter.section("skipped in CI without a reason naming why it cannot run there")
        for line in _unexplained_skips(terminalreporter):
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if _in_ci() and reporter is not None and _unexplained_skips(reporter) and exitstatus == 0:
        session.exitstatus = 1
