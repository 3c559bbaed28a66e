"""The lake on Delta Lake: commits, the _publish log, the quality-gate staging, and the table locks.

The locks are exercised across real processes (``flock`` is per open file, so a holder in
another process is what a concurrent run looks like). Tables are read back with the ``deltalake``
package, as an independent reader would."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from etl_assets.lake import PUBLISH, Lake, LakeLockTimeout, LakeTableError, Write


def rows(lake: Lake, layer: str, table: str, version: int | None = None) -> list[dict]:
    return sorted(DeltaTable(lake.path(layer, table), version=version).to_pyarrow_table().to_pylist(), key=str)


def frame(spark, version: int, n: int):
    return spark.createDataFrame([(i, version) for i in range(n)], "id int, version int")


def pair(spark, version: int, n_silver: int, n_quarantine: int) -> list[Write]:
    return [Write(frame(spark, version, n_silver), "silver", "t"), Write(frame(spark, version, n_quarantine), "quarantine", "t")]


def latest_pair(lake: Lake) -> dict[str, int]:
    """The silver/quarantine versions that the latest _publish commit naming both names."""
    published = lake.published().to_pylist()
    by_time: dict = {}
    for r in published:
        by_time.setdefault((r["published_at"], r["run_id"]), {})[r["layer"]] = r["version"]
    both = [v for _, v in sorted(by_time.items()) if {"silver", "quarantine"} <= set(v)]
    return both[-1]


def test_a_transaction_is_one_delta_commit_per_table_and_one_publish_commit(spark, tmp_path):
    lake = Lake(str(tmp_path))
    with lake.transaction(pair(spark, 1, 3, 2), "run-1"):
        pass
    with lake.transaction(pair(spark, 2, 4, 1), "run-2") as staged:
        pass
    assert {r["version"] for r in rows(lake, "silver", "t")} == {2} and len(rows(lake, "silver", "t")) == 4
    assert {r["version"] for r in rows(lake, "quarantine", "t")} == {2} and len(rows(lake, "quarantine", "t")) == 1
    assert [s["version"] for s in staged.stats] == [1, 1]
    assert [(s["rows"], s["operation"]) for s in staged.stats] == [(4, "WRITE"), (1, "WRITE")]
    assert all(s["files"] >= 1 and s["bytes"] > 0 and s["files_removed"] >= 1 for s in staged.stats)
    # the previous version is still there for time travel
    assert {r["version"] for r in rows(lake, "silver", "t", version=0)} == {1}
    # _publish: one row per table and commit, the pair in one commit of its own
    log = sorted((r["run_id"], r["layer"], r["table"], r["version"], r["rows"]) for r in lake.published().to_pylist())
    assert log == [("run-1", "quarantine", "t", 0, 2), ("run-1", "silver", "t", 0, 3),
                   ("run-2", "quarantine", "t", 1, 1), ("run-2", "silver", "t", 1, 4)]
    assert DeltaTable(str(tmp_path / PUBLISH)).version() == 1  # two commits: one per transaction
    assert not [p for p in (tmp_path / "_staging").rglob("*") if p.is_file()]


def test_tables_are_reader_version_1_without_pii_or_raw_lines_in_statistics(spark, tmp_path):
    lake = Lake(str(tmp_path))
    df = spark.createDataFrame([("c1", "a@x.com", "a line", ["r"], "2026-01-01")],
                               "customer_id string, email string, _corrupt_record string, _reasons array<string>, _dt string")
    lake.commit([Write(df, "bronze", "customers", pii=frozenset({"email"}))], "run-1")
    table = DeltaTable(lake.path("bronze", "customers"))
    assert (table.protocol().min_reader_version, table.protocol().reader_features) == (1, None)
    assert table.metadata().configuration["delta.dataSkippingStatsColumns"] == "`customer_id`,`_dt`"
    log_text = "".join(p.read_text() for p in (tmp_path / "bronze" / "customers" / "_delta_log").glob("*.json"))
    assert "c1" in log_text and "a@x.com" not in log_text and "a line" not in log_text


def test_killed_between_silver_and_quarantine_commits(spark, tmp_path, monkeypatch):
    """The torn state: silver committed, quarantine not, _publish not appended. _publish still
    names the previous pair, which adds up; the next run of the dataset commits a new pair."""
    lake = Lake(str(tmp_path))
    with lake.transaction(pair(spark, 1, 3, 2), "run-1"):
        pass
    real_commit, calls = Lake._commit, []

    def dies_after_first(self, w):
        if calls:
            raise KeyboardInterrupt("killed between the two commits")  # like a SIGKILL: no cleanup
        calls.append(w.table)
        return real_commit(self, w)

    monkeypatch.setattr(Lake, "_commit", dies_after_first)
    with pytest.raises(KeyboardInterrupt):
        with lake.transaction(pair(spark, 2, 4, 1), "run-2"):
            pass
    monkeypatch.setattr(Lake, "_commit", real_commit)
    assert {r["version"] for r in rows(lake, "silver", "t")} == {2}  # the new silver is live
    assert {r["version"] for r in rows(lake, "quarantine", "t")} == {1}
    named = latest_pair(lake)
    assert named == {"silver": 0, "quarantine": 0}
    assert {r["version"] for r in rows(lake, "silver", "t", named["silver"])} == {1}  # a consistent pair
    with lake.transaction(pair(spark, 3, 5, 2), "run-3"):  # the next run repairs it
        pass
    assert latest_pair(lake) == {"silver": 2, "quarantine": 1}
    assert {r["version"] for r in rows(lake, "quarantine", "t")} == {3}


def test_leftover_staging_of_a_killed_publish_is_removed(spark, tmp_path):
    lake = Lake(str(tmp_path))
    lake.publish(frame(spark, 1, 2), "gold", "g")
    leftover = tmp_path / "_staging" / "gold" / "g" / "123-dead"
    leftover.mkdir(parents=True)
    (leftover / "part-0.parquet").write_bytes(b"half written")
    lake.publish(frame(spark, 2, 2), "gold", "g")
    assert not leftover.exists()
    assert {r["version"] for r in rows(lake, "gold", "g")} == {2}


def test_a_transaction_that_raises_publishes_nothing_and_leaves_no_staging(spark, tmp_path):
    """What a failed quality gate does: the tables were staged, the block raises, nothing is
    committed and the staged files are gone; the next transaction publishes normally."""
    lake = Lake(str(tmp_path))
    with lake.transaction(pair(spark, 1, 3, 2), "run-1"):
        pass
    with pytest.raises(RuntimeError, match="gate"):
        with lake.transaction(pair(spark, 2, 4, 1), "run-2") as staged:
            assert all(Path(p).is_dir() for p in staged.paths) and staged.stats == []
            assert {r["version"] for r in rows(lake, "silver", "t")} == {1}  # staged, not visible
            raise RuntimeError("quality gate blocked publishing")
    assert lake.version("silver", "t") == 0 and lake.version("quarantine", "t") == 0
    assert {r["run_id"] for r in lake.published().to_pylist()} == {"run-1"}
    assert not [p for p in (tmp_path / "_staging").rglob("*") if p.is_file()]
    with lake.transaction(pair(spark, 3, 1, 1), "run-3"):
        pass
    assert {r["version"] for r in rows(lake, "silver", "t")} == {3} == {r["version"] for r in rows(lake, "quarantine", "t")}


def test_replace_where_commits_replace_only_the_matching_rows(spark, tmp_path):
    lake = Lake(str(tmp_path))
    day = lambda d, n: spark.createDataFrame([(d, i) for i in range(n)], "_dt string, n int")  # noqa: E731
    lake.commit([Write(day("d1", 2).unionByName(day("d2", 3)), "bronze", "b")], "run-1")
    stats = lake.commit([Write(day("d2", 1), "bronze", "b", replace_where="_dt IN ('d2')")], "run-2")[0]
    assert sorted((r["_dt"], r["n"]) for r in rows(lake, "bronze", "b")) == [("d1", 0), ("d1", 1), ("d2", 0)]
    assert stats["rows"] == 3 and stats["version"] == 1


def test_a_damaged_delta_log_names_the_table(spark, tmp_path):
    lake = Lake(str(tmp_path))
    # written without Spark, so this session has no cached snapshot of it
    lake.append("gold", "g", pa.table({"id": [1, 2]}), "run-1")
    for f in (tmp_path / "gold" / "g" / "_delta_log").glob("*.json"):
        f.write_text("{not json")
    with pytest.raises(LakeTableError, match="gold/g"):
        lake.read(spark, "gold", "g").count()
    with pytest.raises(LakeTableError, match="gold/g"):
        lake.rows("gold", "g")


HOLDER = textwrap.dedent(
    """
    import sys, time
    from etl_assets.lake import Lake
    lake = Lake(sys.argv[1])
    with lake.step_lock(writes=[("silver", "t")], owner="run holder-run"):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    print("released", time.time(), flush=True)
    """
)


def _hold(root, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_locked_table_is_refused_with_a_clear_message(spark, tmp_path):
    lake = Lake(str(tmp_path))
    holder = _hold(tmp_path, 30)
    try:
        with pytest.raises(LakeLockTimeout) as err:
            with lake.step_lock(writes=[("silver", "t")], timeout_s=0.5):
                pass
        msg = str(err.value)
        assert "silver/t" in msg and "run holder-run" in msg and "ETL_LAKE_LOCK_TIMEOUT_S" in msg
        # a reader waits for the writer too
        with pytest.raises(LakeLockTimeout):
            with lake.step_lock(reads=[("silver", "t")], timeout_s=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock died with it
    with lake.step_lock(writes=[("silver", "t")], timeout_s=1):
        pass


def test_a_writer_waits_for_the_holder_then_publishes(spark, tmp_path):
    """The lock kept on a local lake (Delta's local log store may let two commits at the same
    moment overwrite each other): a writer blocks while another process holds the table, then
    commits once it is released."""
    lake = Lake(str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER_UNTIL_STDIN, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    done = threading.Event()
    writer = threading.Thread(target=lambda: (lake.publish(frame(spark, 7, 2), "silver", "t"), done.set()))
    writer.start()
    try:
        assert not done.wait(3), "the writer committed while another process held the table"
        assert not lake.exists("silver", "t")
    finally:
        holder.communicate("release\n", timeout=30)
    writer.join(120)
    assert done.is_set()
    assert {r["version"] for r in rows(lake, "silver", "t")} == {7}


HOLDER_UNTIL_STDIN = textwrap.dedent(
    """
    import sys
    from etl_assets.lake import Lake
    with Lake(sys.argv[1]).step_lock(writes=[("silver", "t")], owner="run holder-run"):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def test_readers_share_and_locks_are_reentrant(tmp_path):
    a, b = Lake(str(tmp_path)), Lake(str(tmp_path))
    with a.step_lock(reads=[("silver", "t")]):
        with b.step_lock(reads=[("silver", "t")], timeout_s=0.5):  # two readers at once
            pass
        with pytest.raises(LakeLockTimeout):
            with b.step_lock(writes=[("silver", "t")], timeout_s=0.3):
                pass
    with a.step_lock(writes=[("gold", "g")]):
        with a.step_lock(writes=[("gold", "g")], timeout_s=0.1):  # a step's publish inside its own lock
            pass
        info = json.loads((tmp_path / "_locks" / "gold" / "g.lock").read_text())
        assert info["pid"] > 0 and info["since"]


def test_a_redelivered_file_with_quotes_in_its_name_replaces_its_rows(spark, tmp_path):
    """Incremental ingestion replaces a changed file's rows by ``replaceWhere`` (Spark SQL) and
    its ingest-log entry by a ``deltalake`` predicate (DataFusion SQL): a key with a quote and a
    backslash-free odd name goes through both dialects."""
    from etl_assets.ingest import BronzeConfig, ingest_bronze
    from etl_assets.registry import dataset
    from etl_assets.sample_data import generate
    from etl_assets.storage import landing_store

    landing, lake, ds = tmp_path / "landing", Lake(str(tmp_path / "lake")), dataset("rates")
    generate(landing, days=2, seed=4, scale=0.002)
    day = sorted((landing / "fx/rates").glob("dt=*"))[0]
    odd = day / "part-o'brien's \"rates\".csv"
    (day / "part-0001.csv").rename(odd)
    ingest_bronze(spark, ds, landing_store(str(landing)), lake, "run-1", BronzeConfig())
    total = lake.rows("bronze", "rates")
    header, *lines = odd.read_text().splitlines()
    odd.write_text("\n".join([header, *lines[:-1]]) + "\n")  # re-delivered with one row less
    out = ingest_bronze(spark, ds, landing_store(str(landing)), lake, "run-2", BronzeConfig(mode="incremental"))
    assert (out.mode, out.files_read, out.files_replaced) == ("incremental", 1, 1)
    assert lake.rows("bronze", "rates") == total - 1
    bronze = DeltaTable(lake.path("bronze", "rates")).to_pyarrow_table().to_pylist()
    assert sum(r["_source_file"].endswith("part-o'brien's \"rates\".csv") for r in bronze) == len(lines) - 1
    # the log recorded the new version: the next run finds nothing new
    assert ingest_bronze(spark, ds, landing_store(str(landing)), lake, "run-3", BronzeConfig(mode="incremental")) is None


def test_an_s3_lake_without_credentials_is_refused_naming_the_setting(monkeypatch):
    """No credentials anywhere (environment, files, instance metadata): the start-up check of an
    S3 lake fails before any step, naming ETL_LAKE_URI and the bucket."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
              "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with pytest.raises(ValueError, match=r"ETL_LAKE_URI='s3://acme-lake/lake': cannot use bucket 'acme-lake': .*credentials"):
        Lake("s3://acme-lake/lake").check()
