"""Builders of tiny hand-made bronze frames for unit tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from etl_assets.registry import dataset
from etl_assets.transforms.bronze import bronze_schema


def bronze(spark, ds_name: str, rows: list[dict], default_dt: str = "2026-11-01"):
    """Bronze rows: source values as strings; ``_dt``/``_source_file``/``_corrupt_record`` may be given."""
    ds = dataset(ds_name)
    schema = bronze_schema(ds)
    data = []
    for r in rows:
        d = r.get("_dt", default_dt)
        data.append(
            tuple(None if r.get(c) is None else str(r.get(c)) for c in ds.source_columns)
            + (
                r.get("_corrupt_record"),
                r.get("_source_file", f"/landing/{ds.landing_prefix}/dt={d}/part-1{ds.ext}"),
                d,
                dt.datetime(2026, 11, 27, 12, 0, 0),
                "test-run",
            )
        )
    return spark.createDataFrame(data, schema)


def rows_by(df, key: str) -> dict:
    return {r[key]: r.asDict() for r in df.collect()}


def read_table(lake, layer: str, table: str) -> list[dict]:
    """A published lake table as Python rows, read without Spark (pyarrow)."""
    import pyarrow.dataset as pads

    return pads.dataset(str(Path(lake) / layer / table), format="parquet").to_table().to_pylist()


def materializations(result) -> dict[str, dict]:
    """``layer/table`` -> the metadata values of its materialization in a run's result."""
    out = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        out["/".join(mat.asset_key.path)] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return out
