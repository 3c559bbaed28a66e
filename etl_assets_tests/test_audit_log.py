"""The write audit ``gold/audit_log``: one row per published table version.

After the session's real ``etl_all`` run (``lake_run``, launched as ``dagster/user`` =
``ops-alice``): exactly one row per published table, with the run id, rows equal to the table's
row count, launched_by, the code version and ``started_at <= finished_at``. Plus the pieces:
``launched_by`` from run tags, the code version, atomic and concurrent appends.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import threading
from pathlib import Path

import pytest
from dagster import AssetKey
from deltalake import DeltaTable

from etl_assets import audit
from etl_assets.lake import Lake
from etl_assets.registry import DATASETS, GOLD_TABLES

REPO = Path(__file__).resolve().parents[1]


def expected_code_version() -> str:
    if os.environ.get("ETL_CODE_VERSION", "").strip():
        return os.environ["ETL_CODE_VERSION"].strip()
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def test_one_audit_row_per_published_table(lake_run):
    result, lake = lake_run["result"], lake_run["lake"]
    assert result.success
    log = audit.read(lake).to_pylist()
    published = sorted(
        "/".join(e.event_specific_data.materialization.asset_key.path)
        for e in result.get_asset_materialization_events()
    )
    expected_tables = sorted(
        [f"{layer}/{ds.name}" for layer in ("bronze", "silver", "quarantine") for ds in DATASETS]
        + [f"gold/{t}" for t in (*GOLD_TABLES, "dq_scorecard")]
    )
    assert published == expected_tables  # every table of etl_all was published once
    assert sorted(r["asset"] for r in log) == expected_tables  # ... and audited exactly once
    version = expected_code_version()
    for r in log:
        layer, table = r["asset"].split("/")
        rows = DeltaTable(str(lake / layer / table)).to_pyarrow_dataset().count_rows()
        assert r["rows"] == rows, r
        assert r["run_id"] == result.run_id and r["job"] == "etl_all", r
        assert r["launched_by"] == lake_run["user"], r
        assert r["code_version"] == version and version != "unknown", r
        assert r["started_at"].tzinfo is not None and r["started_at"] <= r["finished_at"], r
    # the same rows through Spark (the way a BI tool or an auditor reads the folder)
    # are covered by the Pandera model: the schema matches
    from etl_assets.schemas import spark_schema

    assert [f.name for f in spark_schema("gold/audit_log").fields] == audit.SCHEMA.names


def test_audit_log_readable_by_spark_and_valid(lake_run, spark):
    from etl_assets.checks import validate

    df = spark.read.format("delta").load(str(lake_run["lake"] / "gold" / "audit_log"))
    outcomes = validate(df, "gold/audit_log")
    assert all(o.passed for o in outcomes), [(o.name, o.description) for o in outcomes]
    assert df.count() == audit.read(lake_run["lake"]).num_rows


def test_audit_log_is_visible_in_dagster(lake_run):
    from etl_assets import defs

    node = defs.get_repository_def().asset_graph.get(AssetKey(["gold", "audit_log"]))
    assert node.group_name == "gold" and "one row per published table version" in node.description
    schema = node.metadata["dagster/column_schema"]
    cols = [c.name for c in getattr(schema, "schema", schema).columns]
    assert cols == audit.SCHEMA.names
    # every append is also an observation of gold/audit_log in the event log
    obs = lake_run["instance"].fetch_observations(AssetKey(["gold", "audit_log"]), limit=1000).records
    assert len(obs) == audit.read(lake_run["lake"]).num_rows
    assert {o.asset_observation.metadata["launched_by"].value for o in obs} == {lake_run["user"]}


@pytest.mark.parametrize(
    "tags, expected",
    [
        ({"dagster/user": "alice@example.com", "launched_by": "bob"}, "alice@example.com"),
        ({"launched_by": "bob"}, "bob"),
        ({"dagster/sensor_name": "landing_arrival_sensor"}, "sensor:landing_arrival_sensor"),
        ({"dagster/schedule_name": "nightly"}, "schedule:nightly"),
        ({"dagster/backfill": "abcd"}, "backfill:abcd"),
        ({"dagster/from_automation_condition": "true"}, "automation"),
        ({"launched_by": "  "}, "manual"),
        ({}, "manual"),
        (None, "manual"),
    ],
)
def test_launched_by(tags, expected):
    assert audit.launched_by(tags) == expected


def test_code_version_env_git_and_unknown(monkeypatch):
    monkeypatch.setenv("ETL_CODE_VERSION", "v1.2.3-abc")
    assert audit.code_version() == "v1.2.3-abc"
    monkeypatch.delenv("ETL_CODE_VERSION")
    assert audit.code_version() == expected_code_version()
    audit._git_head.cache_clear()
    monkeypatch.setattr(audit, "REPO_ROOT", Path("/"))  # not a git work tree
    try:
        assert audit.code_version() == "unknown"
    finally:
        audit._git_head.cache_clear()


def _row(i: int, asset: str = "silver/customers") -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    return dict(run_id=f"run-{i:04d}-0000", job="etl_all", asset=asset, rows=i, launched_by="manual",
                code_version="abc", started_at=now, finished_at=now)


def test_concurrent_appends_never_clash(tmp_path):
    """Many writers at once (threads here; runs are processes, and deltalake's commit is the same
    atomic create-if-absent): every row lands once, each in its own Delta commit, and each
    commit's _publish row names its version."""
    n, threads = 40, []
    errors = []

    def write(i):
        try:
            audit.append(tmp_path, **_row(i))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    for i in range(n):
        threads.append(threading.Thread(target=write, args=(i,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert sorted(audit.read(tmp_path).column("rows").to_pylist()) == list(range(n))
    log = DeltaTable(str(tmp_path / "gold" / "audit_log"))
    assert log.version() == n - 1  # one commit per row
    published = Lake(str(tmp_path)).published().to_pylist()
    assert sorted(r["version"] for r in published) == list(range(n))
    assert {r["table"] for r in published} == {"audit_log"}


def test_append_rejects_inverted_times(tmp_path):
    r = _row(1)
    r["started_at"] = r["finished_at"] + dt.timedelta(seconds=1)
    with pytest.raises(ValueError, match="started_at"):
        audit.append(tmp_path, **r)
    assert not Lake(str(tmp_path)).exists("gold", "audit_log")
