"""Data quality: one-pass validation of a frame against its Pandera model, plus the platform's
other checks (primary key, conservation, quarantine rate, referential integrity, volume, drift).

Every check of a table's Pandera model (nullability, ``isin``, ``ge``, ``str_matches``, ...) and
its primary-key uniqueness become Spark column expressions. ``PublishCheck`` evaluates them while
the frame is written to the lake's staging area (a Spark ``Observation`` on the write, then the
key on the staged files' key columns), so validating a table costs no extra pass over it; the
staged version is swapped in only if the gate passes. ``validate`` evaluates the same checks in
one aggregation over a frame (a table that is already published). Sample failing keys are
fetched only for checks that fail. Column presence and types are compared with the frame's
schema without running a job.

Each result becomes a Dagster ``AssetCheckResult`` (``to_result``). Severity ERROR results are
the quality gate: the asset does not publish and fails, so readers keep the previous version and
downstream assets do not run.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl_assets.schemas import PRIMARY_KEYS, TABLE_SCHEMAS

SAMPLE_KEYS = 5
DQ_DIR = Path(__file__).parent / "dq"

# check names
SCHEMA = "pandera_schema"
PRIMARY_KEY = "primary_key_unique"
CONSERVATION = "conservation"
QUARANTINE_RATE = "quarantine_rate"
REFERENTIAL = "referential_integrity"
VOLUME = "volume"
DRIFT = "schema_drift"
READABLE = "files_readable"


@dataclass
class Outcome:
    name: str
    passed: bool
    severity: str = "ERROR"  # ERROR | WARN
    description: str = ""
    failed_rows: int = 0
    sample_keys: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    @property
    def blocking_failure(self) -> bool:
        return not self.passed and self.severity == "ERROR"

    def to_result(self, asset_key: AssetKey) -> AssetCheckResult:
        meta = {
            "failed_rows": self.failed_rows,
            "what_failed": self.description or ("nothing" if self.passed else self.name),
            **self.metadata,
        }
        if self.sample_keys:
            meta["sample_keys"] = MetadataValue.json([str(k) for k in self.sample_keys[:SAMPLE_KEYS]])
        return AssetCheckResult(
            asset_key=asset_key,
            check_name=self.name,
            passed=self.passed,
            severity=AssetCheckSeverity.ERROR if self.severity == "ERROR" else AssetCheckSeverity.WARN,
            metadata=meta,
        )


# -- translating Pandera checks into Spark expressions ----------------------------------------


def _failure_expr(col: Column, check) -> Column | None:
    """A condition true for rows failing the Pandera check (nulls pass, as ignore_na=True)."""
    s = check.statistics or {}
    name = check.name
    if name == "isin":
        return ~col.isin(*s["allowed_values"])
    if name == "notin":
        return col.isin(*s["forbidden_values"])
    if name == "str_matches":
        return ~col.rlike(s["pattern"])
    if name == "greater_than_or_equal_to":
        return col < F.lit(s["min_value"])
    if name == "greater_than":
        return col <= F.lit(s["min_value"])
    if name == "less_than_or_equal_to":
        return col > F.lit(s["max_value"])
    if name == "less_than":
        return col >= F.lit(s["max_value"])
    if name == "equal_to":
        return col != F.lit(s["value"])
    if name == "not_equal_to":
        return col == F.lit(s["value"])
    if name == "in_range":
        lo, hi = F.lit(s["min_value"]), F.lit(s["max_value"])
        low_ok = col >= lo if s.get("include_min", True) else col > lo
        high_ok = col <= hi if s.get("include_max", True) else col < hi
        return ~(low_ok & high_ok)
    raise ValueError(f"no Spark translation for Pandera check {name!r}")


def _structure_problems(df: DataFrame, table: str) -> list[str]:
    """Missing, extra and retyped columns against the model (no Spark job)."""
    schema = TABLE_SCHEMAS[table].to_schema()
    actual = {f.name: f.dataType for f in df.schema.fields}
    problems = []
    for name, col in schema.columns.items():
        if name not in actual:
            problems.append(f"missing column {name}")
        elif actual[name] != col.dtype.type:
            problems.append(f"{name}: expected {col.dtype.type.simpleString()}, got {actual[name].simpleString()}")
    problems += [f"unexpected column {n}" for n in actual if n not in schema.columns]
    return problems


def validate(df: DataFrame, table: str) -> list[Outcome]:
    """The Pandera schema check and the primary-key check of ``table`` in one Spark job over
    ``df`` (a table that is already published, for example ``gold/audit_log``)."""
    conditions, key, aggs = _validation_aggs(df, table)
    row = df.agg(*aggs).collect()[0].asDict()
    return _outcomes(df, table, conditions, key, row)


def _validation_aggs(df: DataFrame, table: str, distinct_keys: bool = True):
    """Aggregates (aliased ``__rows``, ``__c<j>``, ``__keys``) of the column checks and the key count."""
    schema = TABLE_SCHEMAS[table].to_schema()
    key = list(PRIMARY_KEYS.get(table, ()))
    present = {f.name for f in df.schema.fields}
    conditions: dict[str, Column] = {}
    for name, column in schema.columns.items():
        if name not in present:
            continue
        c = F.col(f"`{name}`")
        if not column.nullable:
            conditions[f"{name} is null"] = c.isNull()
        for check in column.checks:
            conditions[f"{name} {check.name} {check.statistics}"] = _failure_expr(c, check)
    aggs = [F.count(F.lit(1)).alias("__rows")]
    aggs += [F.sum(F.coalesce(cond, F.lit(False)).cast("long")).alias(f"__c{j}")
             for j, cond in enumerate(conditions.values())]
    if key and distinct_keys:
        aggs.append(F.count_distinct(F.struct(*[F.col(f"`{k}`") for k in key])).alias("__keys"))
    return conditions, key, aggs


class PublishCheck:
    """``validate`` computed while the frame is written, instead of in a job of its own.

    ``df`` is the frame to write: ``df`` with a Spark ``Observation`` of the model's column checks
    attached, so the (staging) write computes them as it goes (``Lake.transaction``). ``outcomes``
    then reads the observed counts and checks the primary key on the staged Parquet files (key
    columns only), so nothing recomputes the frame. Sample failing keys are fetched only when a
    check fails. The quality gate runs on these outcomes before the staged tables are swapped in.
    """

    def __init__(self, df: DataFrame, table: str):
        from pyspark.sql import Observation

        self.table, self.frame = table, df
        self.conditions, self.key, aggs = _validation_aggs(df, table, distinct_keys=False)
        self.observation = Observation(f"validate {table} {id(self):x}")
        self.df = df.observe(self.observation, *aggs)

    def outcomes(self, staged: Path) -> list[Outcome]:
        """The outcomes once ``df`` has been written to ``staged`` (a non-partitioned Parquet folder)."""
        row = dict(self.observation.get)
        if self.key:
            spark = self.frame.sparkSession
            fields = {f.name: f for f in self.frame.schema.fields}
            schema = T.StructType([fields[k] for k in self.key if k in fields])
            if len(schema.fields) == len(self.key):
                groups = spark.read.schema(schema).parquet(str(staged)).groupBy(*[F.col(f"`{k}`") for k in self.key])
                distinct = groups.count().agg(F.count(F.lit(1)).alias("n")).collect()[0]["n"]
            else:
                distinct = row["__rows"]  # a key column is missing: the structure check fails
            row["__keys"] = distinct
        return _outcomes(self.frame, self.table, self.conditions, self.key, row)


def _outcomes(df: DataFrame, table: str, conditions: dict, key: list, row: dict) -> list[Outcome]:
    structure = _structure_problems(df, table)
    rows = row["__rows"] or 0
    failing = {label: row[f"__c{j}"] or 0 for j, label in enumerate(conditions)}
    failing = {k: v for k, v in failing.items() if v}
    # Pandera schema: structure + every column check
    failed_rows = 0
    samples: list = []
    if failing and key:  # the failing conditions again, on the frame, for the failing rows and sample keys
        any_fail = None
        for label, cond in conditions.items():
            if label in failing:
                cnd = F.coalesce(cond, F.lit(False))
                any_fail = cnd if any_fail is None else (any_fail | cnd)
        bad = df.where(any_fail)
        failed_rows = bad.count()
        samples = [tuple(r) if len(key) > 1 else r[0] for r in bad.select(*key).limit(SAMPLE_KEYS).collect()]
    elif failing:
        failed_rows = max(failing.values())
    schema_ok = not structure and not failing
    outcomes = [
        Outcome(
            name=SCHEMA,
            passed=schema_ok,
            description="; ".join(structure + [f"{k}: {v} rows" for k, v in failing.items()]) if not schema_ok else "",
            failed_rows=failed_rows,
            sample_keys=samples,
            metadata={"rows_checked": rows, "failed_checks": len(failing) + len(structure),
                      "model": TABLE_SCHEMAS[table].__name__},
        )
    ]
    if key:
        dupes = rows - row["__keys"]
        sample = []
        if dupes:
            sample = [
                tuple(r)[:-1] if len(key) > 1 else r[0]
                for r in df.groupBy(*key).count().where("count > 1").limit(SAMPLE_KEYS).collect()
            ]
        outcomes.append(
            Outcome(
                name=PRIMARY_KEY,
                passed=dupes == 0,
                description=f"{dupes} rows share a primary key ({', '.join(key)})" if dupes else "",
                failed_rows=dupes,
                sample_keys=sample,
                metadata={"primary_key": ", ".join(key)},
            )
        )
    return outcomes


# -- dataset rules (dq.yaml) ------------------------------------------------------------------


@lru_cache(maxsize=None)
def dq_rules(dataset: str) -> dict:
    """Thresholds of a dataset from ``etl_assets/dq/<dataset>.yaml`` over ``_defaults.yaml``."""
    rules = yaml.safe_load((DQ_DIR / "_defaults.yaml").read_text()) or {}
    path = DQ_DIR / f"{dataset}.yaml"
    if path.exists():
        for k, v in (yaml.safe_load(path.read_text()) or {}).items():
            rules[k] = {**rules.get(k, {}), **v} if isinstance(v, dict) else v
    return rules


def conservation_outcome(counts, bronze_rows: int, silver_written: int, quarantined_written: int) -> Outcome:
    """``bronze = duplicate_row + quarantined + superseded + silver`` with each side counted on its
    own, so the check can fail: ``bronze_rows`` from the published bronze table (its Parquet
    footers), ``silver_written``/``quarantined_written`` the rows the staging writes of the two
    tables saw, duplicate and superseded rows from the classification (``counts``). A frame that
    loses or repeats rows on the way to the lake, or a classification that did not see every
    published bronze row, fails it."""
    total = counts.duplicate_row + counts.superseded + silver_written + quarantined_written
    passed = bronze_rows == total
    description = ""
    if not passed:
        description = (f"bronze {bronze_rows} != {total} accounted for (duplicate {counts.duplicate_row} + "
                       f"superseded {counts.superseded} + silver {silver_written} + quarantined {quarantined_written} "
                       f"written)")
        if (counts.silver_rows, counts.quarantined) != (silver_written, quarantined_written):
            description += (f"; classified silver {counts.silver_rows}, quarantined {counts.quarantined}")
        if counts.bronze_rows != bronze_rows:
            description += f"; the classification read {counts.bronze_rows} bronze rows"
    return Outcome(
        name=CONSERVATION,
        passed=passed,
        description=description,
        failed_rows=abs(bronze_rows - total),
        metadata={
            "bronze_rows": bronze_rows,
            "duplicate_row": counts.duplicate_row,
            "quarantined": quarantined_written,
            "superseded": counts.superseded,
            "silver_rows": silver_written,
        },
    )


def quarantine_rate_outcome(dataset: str, counts, sample_keys: list | None = None) -> Outcome:
    rules = dq_rules(dataset)["quarantine_rate"]
    considered = counts.bronze_rows - counts.duplicate_row
    rate = counts.quarantined / considered if considered else 0.0
    warn, error = float(rules["warn_above"]), float(rules["error_above"])
    severity = "ERROR" if rate > error else "WARN"
    passed = rate <= warn
    top = ", ".join(f"{r}={n}" for r, n in sorted(counts.reasons.items(), key=lambda x: -x[1])[:5])
    return Outcome(
        name=QUARANTINE_RATE,
        passed=passed,
        severity=severity,
        description="" if passed else f"{rate:.2%} of {dataset} rows quarantined (warn above {warn:.0%}, error above {error:.0%}): {top}",
        failed_rows=counts.quarantined,
        sample_keys=sample_keys or [],
        metadata={"quarantine_rate": round(rate, 6), "warn_above": warn, "error_above": error},
    )


def referential_outcome(child: DataFrame, parent: DataFrame, cols: list[str], label: str) -> Outcome:
    """Rows of ``child`` whose non-null ``cols`` have no match in ``parent``."""
    keys = child.select(*cols).where(" AND ".join(f"`{c}` IS NOT NULL" for c in cols))
    orphans = keys.join(parent.select(*cols).distinct(), cols, "left_anti")
    n = orphans.count()
    samples = [tuple(r) if len(cols) > 1 else r[0] for r in orphans.limit(SAMPLE_KEYS).collect()] if n else []
    return Outcome(
        name=REFERENTIAL,
        passed=n == 0,
        description=f"{n} rows: {label}" if n else "",
        failed_rows=n,
        sample_keys=samples,
        metadata={"relationship": label},
    )


def combine(name: str, outcomes: list[Outcome]) -> Outcome:
    """One check result from several (for example one per relationship)."""
    failed = [o for o in outcomes if not o.passed]
    return Outcome(
        name=name,
        passed=not failed,
        severity="ERROR" if any(o.severity == "ERROR" for o in failed) else (failed[0].severity if failed else "ERROR"),
        description="; ".join(o.description for o in failed),
        failed_rows=sum(o.failed_rows for o in outcomes),
        sample_keys=[k for o in failed for k in o.sample_keys][:SAMPLE_KEYS],
        metadata={"relationships": "; ".join(str(o.metadata.get("relationship", o.name)) for o in outcomes)},
    )


def volume_outcome(rows: int, history: list[int], dataset: str | None = None) -> Outcome:
    """WARN when ``rows`` is far from the median of the asset's recent materializations."""
    rules = dq_rules(dataset or "_defaults")["volume"]
    window = int(rules["history"])
    tolerance = float(rules["tolerance"])
    recent = history[:window]
    if len(recent) < int(rules["min_history"]):
        return Outcome(VOLUME, True, "WARN", "", 0, [], {"rows": rows, "history_points": len(recent)})
    median = statistics.median(recent)
    deviation = abs(rows - median) / median if median else (0.0 if rows == 0 else 1.0)
    passed = deviation <= tolerance
    return Outcome(
        name=VOLUME,
        passed=passed,
        severity="WARN",
        description="" if passed else f"{rows} rows is {deviation:.0%} from the recent median {median:g} (tolerance {tolerance:.0%})",
        failed_rows=0 if passed else rows,
        metadata={"rows": rows, "recent_median": float(median), "deviation": round(deviation, 4),
                  "history_points": len(recent)},
    )


def row_count_history(instance, asset_key: AssetKey, limit: int = 20) -> list[int]:
    """``dagster/row_count`` of the asset's previous materializations, newest first."""
    records = instance.fetch_materializations(asset_key, limit=limit).records
    out = []
    for rec in records:
        mat = rec.asset_materialization
        if mat is None:
            continue
        value = mat.metadata.get("dagster/row_count")
        if value is not None:
            out.append(int(value.value))
    return out


def drift_outcome(drift: list) -> Outcome:
    """WARN naming each landed file whose columns differ from the contract."""
    return Outcome(
        name=DRIFT,
        passed=not drift,
        severity="WARN",
        description="; ".join(d.describe() for d in drift),
        failed_rows=len(drift),
        sample_keys=[d.file for d in drift],
        metadata={"files_with_drift": len(drift)},
    )


def readable_outcome(problems: dict[str, str]) -> Outcome:
    """ERROR (not blocking) naming each landed file bronze could not read or refused to read;
    the dataset's other files are published."""
    lines = [why if why.startswith(uri) else f"{uri}: {why}" for uri, why in sorted(problems.items())]
    return Outcome(
        name=READABLE,
        passed=not problems,
        description="; ".join(lines),
        failed_rows=len(problems),
        sample_keys=sorted(problems),
        metadata={"unreadable_files": len(problems)},
    )


def spec(asset_key: AssetKey, name: str, description: str, blocking: bool = False) -> AssetCheckSpec:
    return AssetCheckSpec(name=name, asset=asset_key, description=description, blocking=blocking)


class QualityGateError(Exception):
    """Data failed a blocking (ERROR) check and was not published."""
