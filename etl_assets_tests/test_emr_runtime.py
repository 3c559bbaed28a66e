"""The oldest EMR runtime we support: emr-spark-8.0.0 (Spark 4.0.2, Delta 4.0.0).

EMR's Spark 4 runtimes lag behind this project's main environment (pyspark 4.2.0, Delta 4.4.0).
A second environment, made by ``make emr-runtime-env`` (``ETL_EMR_RUNTIME_VENV``, default
``~/.cache/etl_assets/emr-runtime-venv``: pyspark 4.0.2 with the project's other pins, this source
tree on ``PYTHONPATH``, and Delta 4.0.0's jars through ``ETL_JARS_SET=emr-runtime``), runs the
EMR entry point on a local lake that the main environment wrote:

1. the main environment builds bronze+silver for ``rates`` and ``products`` (its own entry point);
2. a copy of that lake goes to the old runtime, which rebuilds silver and quarantine of both from
   the 4.4-written bronze, committing on top of the 4.4-written silver/quarantine tables;
3. each of those tables' newest commit was made by Spark 4.0.2 / Delta 4.0.0 (the commit's
   ``engineInfo``), the protocol is still reader 1 / writer 2 without table features, and its rows
   (read by ``deltalake`` and by the main environment's Spark + Delta 4.4) equal the main
   environment's for the same selection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from etl_assets.sample_data import generate
from etl_assets_tests.servers import REPO_ROOT, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RUNTIME = "emr-spark-8.0.0"
ENGINE = "Apache-Spark/4.0.2 Delta-Lake/4.0.0"  # what the old runtime writes in each commit
RUNTIME_VENV = Path(os.environ.get("ETL_EMR_RUNTIME_VENV") or Path.home() / ".cache" / "etl_assets" / "emr-runtime-venv")
RUNTIME_PYTHON = RUNTIME_VENV / "bin" / "python"
ENTRYPOINT = REPO_ROOT / "etl_assets" / "emr" / "entrypoint.py"
# silver_<ds> writes silver and quarantine; silver/products reads silver/rates (FX)
MAIN_SELECTION = ["bronze/rates", "bronze/products", "silver/rates", "silver/products"]
OLD_SELECTION = ["silver/rates", "silver/products"]
REBUILT = ["silver/rates", "quarantine/rates", "silver/products", "quarantine/products"]
LINEAGE = {"_run_id", "_ingested_at"}  # differ by run


def _run_entrypoint(python: Path, landing: Path, lake: Path, selection: list[str], log: Path, **extra) -> str:
    env = clean_env({
        "ETL_LANDING_URI": str(landing),
        "ETL_LAKE_URI": str(lake),
        "ETL_SPARK_SHUFFLE_PARTITIONS": "2",
        "PYSPARK_PYTHON": str(python),
        **({"ETL_JARS_DIR": os.environ["ETL_JARS_DIR"]} if os.environ.get("ETL_JARS_DIR") else {}),
        **extra,
    })
    proc = subprocess.run([str(python), str(ENTRYPOINT), "--master", "local[2]", "--select", ",".join(selection)],
                          env=env, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=300)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, f"the entry point failed with {python} (log: {log}):\n{proc.stderr[-5000:]}"
    for key in selection:
        assert f"materialized {key} rows=" in proc.stdout, f"{key} not materialized:\n{proc.stdout[-3000:]}"
    return proc.stdout


def _rows(path: Path):
    """The table's rows read by ``deltalake``, lineage columns dropped, in a canonical order."""
    import pyarrow as pa
    from deltalake import DeltaTable

    t = DeltaTable(str(path)).to_pyarrow_table()
    t = t.select(sorted(c for c in t.column_names if c not in LINEAGE))
    nested = (pa.types.is_list, pa.types.is_large_list, pa.types.is_struct, pa.types.is_map)
    keys = [f.name for f in t.schema if not any(is_(f.type) for is_ in nested)]
    return t.sort_by([(c, "ascending") for c in keys]).combine_chunks()


def test_the_oldest_emr_runtime_runs_the_entry_point_on_tables_the_main_environment_wrote(tmp_path, spark):
    from deltalake import DeltaTable

    if not RUNTIME_PYTHON.exists():
        pytest.fail(f"no {RUNTIME} environment at {RUNTIME_VENV} (ETL_EMR_RUNTIME_VENV): run `make emr-runtime-env`")
    probe = subprocess.run(
        [str(RUNTIME_PYTHON), "-c", "import pyspark; from etl_assets.jars import jar_paths; "
         "print(pyspark.__version__); print(*jar_paths(), sep='\\n')"],
        env=clean_env({"ETL_JARS_SET": "emr-runtime",
                       **({"ETL_JARS_DIR": os.environ["ETL_JARS_DIR"]} if os.environ.get("ETL_JARS_DIR") else {})}),
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, f"{RUNTIME} environment incomplete (make emr-runtime-env):\n{probe.stderr[-3000:]}"
    version, *jars = probe.stdout.split()
    assert version == "4.0.2", f"the {RUNTIME} environment has pyspark {version}"
    assert sorted(Path(j).name for j in jars) == ["delta-spark_2.13-4.0.0.jar", "delta-storage-4.0.0.jar"], jars
    # the whole package, not only what runs below: no pyspark.sql.functions newer than Spark 4.0
    # (try_to_date was one: Spark 4.1+)
    missing = subprocess.run(
        [str(RUNTIME_PYTHON), "-c", "import re, pathlib, pyspark.sql.functions as F; print(*sorted("
         "{n for f in pathlib.Path('etl_assets').rglob('*.py') for n in re.findall(r'\\bF\\.([A-Za-z_]\\w*)', "
         "f.read_text()) if not hasattr(F, n)}))"],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 0 and missing.stdout.split() == [], \
        f"pyspark.sql.functions not in Spark 4.0 ({RUNTIME}): {missing.stdout}{missing.stderr[-2000:]}"

    landing, main_lake, old_lake = tmp_path / "landing", tmp_path / "lake_main", tmp_path / "lake_old"
    generate(str(landing), days=1, seed=14, scale=0.003)

    # 1. the main environment (pyspark 4.2.0, Delta 4.4.0) writes the lake
    _run_entrypoint(Path(sys.executable), landing, main_lake, MAIN_SELECTION, tmp_path / "main.log")
    shutil.copytree(main_lake, old_lake, symlinks=True)
    before = {t: DeltaTable(str(old_lake / t)).version() for t in REBUILT}
    for t in REBUILT:
        assert DeltaTable(str(old_lake / t)).history(1)[0]["engineInfo"].startswith("Apache-Spark/4.2.0 Delta-Lake/4.4")

    # 2. the oldest EMR runtime rebuilds silver/quarantine from 4.4-written bronze, on 4.4-written tables
    _run_entrypoint(RUNTIME_PYTHON, landing, old_lake, OLD_SELECTION, tmp_path / "old.log",
                    ETL_JARS_SET="emr-runtime")

    # 3. its commits: Spark 4.0.2 + Delta 4.0.0, same protocol, same rows as the main environment's
    for t in REBUILT:
        dt = DeltaTable(str(old_lake / t))
        assert dt.version() == before[t] + 1, f"{t}: one commit by the old runtime"
        assert dt.history(1)[0]["engineInfo"] == ENGINE, f"{t}: {dt.history(1)[0]}"
        p = dt.protocol()
        assert (p.min_reader_version, p.min_writer_version, p.reader_features, p.writer_features) == (1, 2, None, None), p
        expected, got = _rows(main_lake / t), _rows(old_lake / t)
        assert got.num_rows == expected.num_rows, f"{t}: {got.num_rows} rows, the main environment {expected.num_rows}"
        assert got.schema == expected.schema, f"{t}: schema\n{got.schema}\nvs the main environment's\n{expected.schema}"
        assert got.equals(expected), f"{t}: rows differ from the main environment's"
        # and the main environment's Spark (Delta 4.4) reads what Delta 4.0 committed
        assert spark.read.format("delta").load(str(old_lake / t)).count() == expected.num_rows
    assert _rows(old_lake / "silver" / "rates").num_rows > 0 and _rows(old_lake / "silver" / "products").num_rows > 0
    for t in ("bronze/rates", "bronze/products"):  # read, not rewritten
        assert DeltaTable(str(old_lake / t)).history(1)[0]["engineInfo"].startswith("Apache-Spark/4.2.0")
