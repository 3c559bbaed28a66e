"""Test helpers: tiny hand-made bronze frames, classifying them, reading published tables,
materialization metadata, and scenarios of ordered steps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from etl_assets.registry import dataset
from etl_assets.transforms.bronze import bronze_schema
from etl_assets.transforms.silver import classify, outcome_counts, quarantine_frame, silver_frame


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
    """A published lake table as Python rows, read without Spark: the ``deltalake`` package
    straight from the table's folder, as an independent reader would."""
    from deltalake import DeltaTable

    return DeltaTable(str(Path(lake) / layer / table)).to_pyarrow_table().to_pylist()


def etl_all_in_process(env: dict, instance=None):
    """``etl_all`` in this process, on the test session's SparkSession (warm, no JVM to start),
    with the variables ``env`` set for the run and put back afterwards; the run's result (not
    raised on failure: ``run_failures`` says why)."""
    import pytest
    from dagster import DagsterInstance

    from etl_assets.definitions import build_definitions
    from etl_assets.settings import load_settings

    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        job = build_definitions(load_settings()).resolve_job_def("etl_all")
        return job.execute_in_process(instance=instance or DagsterInstance.ephemeral(), raise_on_error=False)


def run_failures(result) -> list[str]:
    """The failure events of a run's result, as text."""
    return [f"{e.message} {e.event_specific_data}" for e in result.all_events if "FAILURE" in e.event_type_value]


def materializations(result) -> dict[str, dict]:
    """``layer/table`` -> the metadata values of its materialization in a run's result."""
    out = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        out["/".join(mat.asset_key.path)] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return out


def classified(spark, pii, name, rows, targets=None, fx=None, known=None):
    """Classify hand-made bronze rows: (classified, silver, quarantine, counts); references
    without given targets see empty tables."""
    ds = dataset(name)
    targets = dict(targets or {})
    for ref in ds.references:
        targets.setdefault(ref.target, spark.createDataFrame([], f"{ref.target_column} string"))
    if ds.fx_date_column and fx is None:
        fx = spark.createDataFrame([], "rate_date date, quote_ccy string, rate decimal(18,8)")
    c = classify(bronze(spark, name, rows), ds, targets, fx, known or []).cache()
    return c, silver_frame(c, ds, pii), quarantine_frame(c, ds, pii), outcome_counts(c, ds)


class Scenario:
    """Steps of one scenario, each run once, in order, when first needed: ``check(n)`` runs the
    steps up to ``n`` not run yet and re-raises step ``n``'s own failure, so a test alone
    (``-k``, ``--lf``) runs the steps before it first and any test order gives the same verdicts.
    A step after a failed one is not run (its state would be meaningless) and its test fails
    saying so. ``after_step(flow)`` runs after every step, failed or not."""

    def __init__(self, flow, steps, after_step=None):
        self.flow, self.steps, self.after_step, self.results = flow, steps, after_step, {}

    def check(self, n: int) -> None:
        import pytest

        for i, step in enumerate(self.steps[:n], start=1):
            if i in self.results:
                continue
            failed = next((j for j, e in self.results.items() if e is not None), None)
            if failed is not None:
                pytest.fail(f"step {n} not run: step {failed} ({self.steps[failed - 1].__name__}) failed")
            try:
                step(self.flow)
                self.results[i] = None
            except (Exception, pytest.fail.Exception) as e:  # noqa: BLE001 - reported by its test
                self.results[i] = e
            finally:
                if self.after_step is not None:
                    self.after_step(self.flow)
        if self.results[n] is not None:
            raise self.results[n]
