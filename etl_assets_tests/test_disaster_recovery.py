"""Disaster recovery: silver, quarantine, gold and the Dagster instance are lost; the documented
command rebuilds them from bronze and every table is identical to before, by row checksums
(``python -m etl_assets.checksums``; volatile columns excluded, PII compared by plaintext).

The rebuild runs exactly as README "Disaster recovery" documents it, as a separate process:
``dagster job execute -m etl_assets -j rebuild_from_bronze`` (what ``make rebuild`` runs) against
a new, empty DAGSTER_HOME. ``gold/audit_log`` is not compared: it is append-only by design, and
the rebuild's own publishes are appended to it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from etl_assets import audit
from etl_assets.checksums import lake_checksums, table_checksum
from etl_assets.registry import DATASETS, GOLD_TABLES

REPO = Path(__file__).resolve().parents[1]
ALL_TABLES = sorted(
    [f"{layer}/{ds.name}" for layer in ("bronze", "silver", "quarantine") for ds in DATASETS]
    + [f"gold/{t}" for t in (*GOLD_TABLES, "dq_scorecard")]
)


def _sums(report: dict) -> dict:
    return {t: (v["rows"], v["checksum"]) for t, v in report["tables"].items()}


def test_rebuild_from_bronze_is_identical(lake_run, tmp_path):
    assert lake_run["result"].success
    lake = tmp_path / "lake"
    shutil.copytree(lake_run["lake"], lake)
    before = lake_checksums(lake, decrypt_key=lake_run["key"])
    assert sorted(before["tables"]) == ALL_TABLES and "gold/audit_log" not in before["tables"]
    assert all(v["rows"] > 0 for t, v in before["tables"].items() if not t.startswith("quarantine/")), before

    # the disaster: everything but bronze (and its ingest logs) is gone, the instance too
    for layer in ("silver", "quarantine", "gold"):
        shutil.rmtree(lake / layer)
    home = tmp_path / "new_dagster_home"
    home.mkdir()
    shutil.copy(REPO / "etl_assets" / "instance" / "dagster.local.yaml", home / "dagster.yaml")

    env = {**os.environ, **lake_run["env"], "ETL_LAKE_URI": str(lake), "DAGSTER_HOME": str(home),
           "ETL_SPARK_MASTER": "local[2]", "ETL_SPARK_DRIVER_MEMORY": "2g", "ETL_ALERT_LOG": "none",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "job", "execute", "-m", "etl_assets", "-j", "rebuild_from_bronze",
           "--tags", json.dumps({"launched_by": "make-rebuild"})]
    log = tmp_path / "rebuild.log"
    with open(log, "w") as out:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1800).returncode
    assert rc == 0, log.read_text()[-4000:]

    # the operator's command prints the same JSON
    cli = subprocess.run([sys.executable, "-m", "etl_assets.checksums", "--lake", str(lake), "--decrypt"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    after = json.loads(cli.stdout)
    assert after["decrypted"] is True
    assert sorted(after["tables"]) == ALL_TABLES
    different = {t: (before["tables"][t], after["tables"][t]) for t in ALL_TABLES
                 if _sums(before)[t] != _sums(after)[t]}
    assert not different, different

    # the rebuild appended its own audit rows (one per rebuilt table); the old ones went with gold
    rows = audit.read(lake).to_pylist()
    assert sorted(r["asset"] for r in rows) == [t for t in ALL_TABLES if not t.startswith("bronze/")]
    assert {r["launched_by"] for r in rows} == {"make-rebuild"}


# -- the checksum itself -----------------------------------------------------------------------


def _write(folder: Path, table: pa.Table, parts: int = 1) -> pa.Table:
    """The table as a Delta table in ``folder`` written in ``parts`` commits, read back."""
    shutil.rmtree(folder, ignore_errors=True)
    size = -(-table.num_rows // parts)
    for i in range(parts):
        write_deltalake(str(folder), table.slice(i * size, size), mode="append")
    return DeltaTable(str(folder)).to_pyarrow_table()


def test_checksum_ignores_order_files_and_volatile_columns_but_not_values(tmp_path):
    now = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    base = {
        "id": ["a", "b", "c"],
        "amount": pa.array([Decimal("1.50"), Decimal("2.00"), None], pa.decimal128(18, 2)),
        "urls": [["x"], [], None],
        "_ingested_at": [now] * 3,
        "_run_id": ["r1"] * 3,
    }
    ref = table_checksum(_write(tmp_path / "t", pa.table(base)), "silver/t")
    assert ref["rows"] == 3 and ref["volatile"] == ["_ingested_at", "_run_id"]

    shuffled = pa.table({k: list(reversed(v)) if isinstance(v, list) else v.take([2, 1, 0]) for k, v in base.items()})
    assert table_checksum(_write(tmp_path / "t", shuffled, parts=3), "silver/t")["checksum"] == ref["checksum"]

    rerun = dict(base, _ingested_at=[now + dt.timedelta(hours=1)] * 3, _run_id=["r2"] * 3)
    assert table_checksum(_write(tmp_path / "t", pa.table(rerun)), "silver/t")["checksum"] == ref["checksum"]

    for changed in (
        dict(base, amount=pa.array([Decimal("1.50"), Decimal("2.01"), None], pa.decimal128(18, 2))),
        dict(base, urls=[["x"], [], []]),  # empty array is not null
        dict(base, id=["a", "b", "d"]),
    ):
        assert table_checksum(_write(tmp_path / "t", pa.table(changed)), "silver/t")["checksum"] != ref["checksum"]
    dup = {k: (v + v[:1]) if isinstance(v, list) else pa.concat_arrays([v, v.slice(0, 1)]) for k, v in base.items()}
    res = table_checksum(_write(tmp_path / "t", pa.table(dup)), "silver/t")
    assert res["rows"] == 4 and res["checksum"] != ref["checksum"]  # a multiset: a duplicate counts


def test_checksum_compares_ciphertext_by_plaintext(tmp_path, spark, pii):
    """``*_enc`` differs on every encryption (random IV): without the key it is volatile, with it
    (``--decrypt``) two encryptions of the same value checksum equal and another value differs."""
    from pyspark.sql import functions as F

    def enc(values):
        df = spark.createDataFrame([(v,) for v in values], "v string").select(pii.encrypt(F.col("v")).alias("email_enc"))
        return [r[0] for r in df.collect()]

    one, two, other = enc(["a@x.io"]), enc(["a@x.io"]), enc(["b@x.io"])
    assert one != two
    sums = {}
    for name, vals in (("one", one), ("two", two), ("other", other)):
        folder = _write(tmp_path / name, pa.table({"id": ["1"], "email_enc": vals}))
        sums[name] = (lake_checksums_for(folder, None), lake_checksums_for(folder, pii.key))
    assert sums["one"][0] == sums["two"][0] == sums["other"][0]  # excluded without the key
    assert sums["one"][1] == sums["two"][1] != sums["other"][1]


def lake_checksums_for(table: pa.Table, key: str | None) -> str:
    from etl_assets.checksums import _decryptor

    return table_checksum(table, "quarantine/t", _decryptor(key) if key else None)["checksum"]
