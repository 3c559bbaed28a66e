"""The lake's write protocol: atomic multi-table publish with roll-forward, and the table locks.

The locks are exercised across real processes (``flock`` is per open file, so a holder in
another process is what a concurrent run looks like)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pyarrow.dataset as pads
import pytest

from etl_assets.lake import MARKER, Lake, LakeLockTimeout, Write


def rows(lake: Lake, layer: str, table: str) -> list[dict]:
    return sorted(pads.dataset(lake.path(layer, table), format="parquet").to_table().to_pylist(), key=str)


def frame(spark, version: int, n: int):
    return spark.createDataFrame([(i, version) for i in range(n)], "id int, version int")


def test_publish_many_swaps_tables_together(spark, tmp_path):
    lake = Lake(str(tmp_path))
    lake.publish_many([Write(frame(spark, 1, 3), "silver", "t"), Write(frame(spark, 1, 2), "quarantine", "t")])
    stats = lake.publish_many([Write(frame(spark, 2, 4), "silver", "t"), Write(frame(spark, 2, 1), "quarantine", "t")])
    assert {r["version"] for r in rows(lake, "silver", "t")} == {2} and len(rows(lake, "silver", "t")) == 4
    assert {r["version"] for r in rows(lake, "quarantine", "t")} == {2} and len(rows(lake, "quarantine", "t")) == 1
    assert all(s["files"] >= 1 and s["bytes"] > 0 for s in stats)
    # nothing left behind: no journal, no staged or previous versions
    assert not list((tmp_path / "_staging" / "_txn").glob("*.json"))
    assert not [p for p in (tmp_path / "_staging").rglob("*.parquet")]


def test_killed_between_exchanges_is_rolled_forward(spark, tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    lake.publish_many([Write(frame(spark, 1, 3), "silver", "t"), Write(frame(spark, 1, 2), "quarantine", "t")])

    real_swap, calls = Lake._swap_in, []

    def dies_after_first(staged, live):
        if calls:
            raise KeyboardInterrupt("killed between the two exchanges")  # like a SIGKILL: no cleanup
        calls.append(live)
        real_swap(staged, live)

    monkeypatch.setattr(Lake, "_swap_in", staticmethod(dies_after_first))
    with pytest.raises(KeyboardInterrupt):
        lake.publish_many([Write(frame(spark, 2, 4), "silver", "t"), Write(frame(spark, 2, 1), "quarantine", "t")])
    monkeypatch.setattr(Lake, "_swap_in", staticmethod(real_swap))

    # the torn state a reader could see for an instant; the journal names the staged folder
    assert {r["version"] for r in rows(lake, "silver", "t")} == {2}
    assert {r["version"] for r in rows(lake, "quarantine", "t")} == {1}
    assert len(list((tmp_path / "_staging" / "_txn").glob("*.json"))) == 1

    assert Lake(str(tmp_path)).recover() == 1  # what the next run's first publish does
    assert {r["version"] for r in rows(lake, "quarantine", "t")} == {2} and len(rows(lake, "quarantine", "t")) == 1
    assert (tmp_path / "silver" / "t" / MARKER).read_text() == (tmp_path / "quarantine" / "t" / MARKER).read_text()
    assert not list((tmp_path / "_staging" / "_txn").glob("*.json"))
    assert Lake(str(tmp_path)).recover() == 0


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
    swapped in and the staged folders are gone; the next transaction publishes normally."""
    lake = Lake(str(tmp_path))
    lake.publish_many([Write(frame(spark, 1, 3), "silver", "t"), Write(frame(spark, 1, 2), "quarantine", "t")])
    with pytest.raises(RuntimeError, match="gate"):
        with lake.transaction([Write(frame(spark, 2, 4), "silver", "t"), Write(frame(spark, 2, 1), "quarantine", "t")]) as staged:
            assert all((p / MARKER).exists() for p in staged.paths) and len(staged.stats) == 2
            assert {r["version"] for r in rows(lake, "silver", "t")} == {1}  # staged, not visible
            raise RuntimeError("quality gate blocked publishing")
    assert {r["version"] for r in rows(lake, "silver", "t")} == {1} and len(rows(lake, "silver", "t")) == 3
    assert {r["version"] for r in rows(lake, "quarantine", "t")} == {1}
    assert not [p for p in (tmp_path / "_staging").rglob("*") if p.is_file()]
    with lake.transaction([Write(frame(spark, 3, 1), "silver", "t"), Write(frame(spark, 3, 1), "quarantine", "t")]):
        pass
    assert {r["version"] for r in rows(lake, "silver", "t")} == {3} == {r["version"] for r in rows(lake, "quarantine", "t")}


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
    lake = Lake(str(tmp_path))
    holder = _hold(tmp_path, 2)
    lake.publish(frame(spark, 7, 2), "silver", "t")  # blocks until the holder releases
    acquired_after = time.time()
    out = holder.stdout.read().split()
    holder.wait()
    assert out[0] == "released" and float(out[1]) <= acquired_after
    assert {r["version"] for r in rows(lake, "silver", "t")} == {7}


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
