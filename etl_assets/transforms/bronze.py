"""Landed files -> bronze: every delivered row, values as strings, plus lineage columns.

Files are read with Spark's own readers in PERMISSIVE mode, so a line that cannot be parsed is
kept with its raw text in ``_corrupt_record``. CSV files are grouped by header: each group is
read with its own header's columns, then mapped onto the contract's columns, so a file with
missing, extra or reordered columns still loads (missing -> null, extra ignored) and the
difference is reported as schema drift. A file that cannot be read at all raises
``LandingError`` naming the file.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl_assets.registry import CORRUPT_COLUMN, Dataset
from etl_assets.storage import LandedFile, LandingError, LandingStore

BOM = "\ufeff"


@dataclass
class Drift:
    file: str
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    retyped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing {', '.join(self.missing)}")
        if self.extra:
            parts.append(f"extra {', '.join(self.extra)}")
        if self.retyped:
            parts.append(f"retyped {', '.join(self.retyped)}")
        return f"{self.file}: " + "; ".join(parts)


@dataclass
class BronzeRead:
    df: DataFrame | None
    files: list[LandedFile]
    drift: list[Drift]
    skipped: list[str]  # files with no content (zero bytes): nothing to load


def _csv_header(path: str, f: LandedFile) -> list[str] | None:
    with open(path, "rb") as fh:
        first = fh.readline(1 << 20)
    if not first.strip():
        return None
    text = first.decode("utf-8", errors="replace").lstrip(BOM)
    try:
        return [h.strip() for h in next(csv.reader(io.StringIO(text)))]
    except (csv.Error, StopIteration) as e:
        raise LandingError(f"{f.uri}: unreadable CSV header: {e}") from e


def _with_lineage(df: DataFrame, ds: Dataset, uri_of: dict[str, str], run_id: str) -> DataFrame:
    """Select the contract columns and add ``_source_file``, ``_dt``, ``_ingested_at``, ``_run_id``."""
    path = F.col("_metadata.file_path")
    mapping = F.create_map(*[x for k, v in uri_of.items() for x in (F.lit(k), F.lit(v))])
    # Spark reports file paths as URIs (file:/..., percent-encoded); map them back to landing URIs.
    src = F.coalesce(mapping[path], mapping[F.url_decode(path)], path)
    dt = F.regexp_extract(src, r"/dt=(\d{4}-\d{2}-\d{2})/[^/]*$", 1)
    return df.select(
        *[F.col(c) for c in ds.source_columns],
        F.col(CORRUPT_COLUMN),
        src.alias("_source_file"),
        F.when(dt != "", dt).alias("_dt"),
        F.current_timestamp().alias("_ingested_at"),
        F.lit(run_id).alias("_run_id"),
    )


def _spark_uri_forms(local: str) -> list[str]:
    from pathlib import Path

    p = Path(local).absolute()
    return [p.as_uri(), "file:" + str(p), str(p)]


def read_csv_files(spark, ds, files, store, run_id) -> BronzeRead:
    groups: dict[tuple[str, ...], list[tuple[str, LandedFile]]] = {}
    drift, skipped = [], []
    contract = ds.source_columns
    for f in files:
        local = store.local_path(f)
        header = _csv_header(local, f)
        if header is None:
            skipped.append(f.uri)
            continue
        names = [h for h in header]
        lower = {h.lower(): h for h in names}
        missing = [c for c in contract if c not in names and c.lower() not in lower]
        extra = [h for h in names if h not in contract and h.lower() not in contract]
        if missing or extra:
            drift.append(Drift(file=f.uri, missing=missing, extra=extra))
        groups.setdefault(tuple(names), []).append((local, f))
    frames = []
    for header, members in groups.items():
        # positional column names for the file's own header (unique even if the header repeats)
        positional = [f"_c{i}" for i in range(len(header))]
        schema = T.StructType(
            [T.StructField(n, T.StringType()) for n in positional]
            + [T.StructField(CORRUPT_COLUMN, T.StringType())]
        )
        df = (
            spark.read.schema(schema)
            .option("header", True)
            .option("enforceSchema", True)
            .option("escape", '"')
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
            .option("encoding", "UTF-8")
            .csv([m[0] for m in members])
        )
        select = []
        for c in contract:
            idx = next((i for i, h in enumerate(header) if h == c), None)
            if idx is None:
                idx = next((i for i, h in enumerate(header) if h.lower() == c.lower()), None)
            select.append((F.col(positional[idx]) if idx is not None else F.lit(None).cast("string")).alias(c))
        uri_of = {form: f.uri for local, f in members for form in _spark_uri_forms(local)}
        df = df.select(*select, F.col(CORRUPT_COLUMN), F.col("_metadata"))
        frames.append(_with_lineage(df, ds, uri_of, run_id))
    return BronzeRead(_union(frames), files, drift, skipped)


def read_jsonl_files(spark, ds, files, store, run_id) -> BronzeRead:
    members = []
    skipped = []
    for f in files:
        if f.size == 0:
            skipped.append(f.uri)
            continue
        members.append((store.local_path(f), f))
    if not members:
        return BronzeRead(None, files, [], skipped)
    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in ds.source_columns]
        + [T.StructField(CORRUPT_COLUMN, T.StringType())]
    )
    df = (
        spark.read.schema(schema)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
        .option("encoding", "UTF-8")
        .json([m[0] for m in members])
    )
    uri_of = {form: f.uri for local, f in members for form in _spark_uri_forms(local)}
    return BronzeRead(_with_lineage(df.select("*", "_metadata"), ds, uri_of, run_id), files, [], skipped)


def _as_string(col: str, dtype: T.DataType):
    c = F.col(f"`{col}`")
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        # UTC ISO-8601, the same text form CSV sources use
        return F.date_format(c.cast("timestamp"), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
    if isinstance(dtype, (T.StringType,)):
        return c
    if isinstance(dtype, (T.StructType, T.ArrayType, T.MapType)):
        return F.to_json(c)
    return c.cast("string")


def read_parquet_files(spark, ds, files, store, run_id) -> BronzeRead:
    groups: dict[str, list[tuple[str, LandedFile]]] = {}
    drift, skipped = [], []
    expected = {"order_ts": "timestamp", "last_modified_ts": "timestamp", "quantity": "int",
                "unit_price": "decimal", "amount": "decimal"}
    for f in files:
        local = store.local_path(f)
        if f.size == 0:
            skipped.append(f.uri)
            continue
        try:
            schema = pq.read_schema(local)
        except Exception as e:  # truncated, not Parquet, ...
            raise LandingError(f"{f.uri}: cannot read Parquet file: {e}") from e
        names = schema.names
        missing = [c for c in ds.source_columns if c not in names]
        extra = [n for n in names if n not in ds.source_columns]
        retyped = []
        for c in names:
            want = expected.get(c)
            got = str(schema.field(c).type)
            if want and not got.startswith(want):
                retyped.append(f"{c} ({got})")
        if missing or extra or retyped:
            drift.append(Drift(file=f.uri, missing=missing, extra=extra, retyped=retyped))
        groups.setdefault(str(schema), []).append((local, f))
    frames = []
    for members in groups.values():
        df = spark.read.parquet(*[m[0] for m in members])
        types = {fld.name: fld.dataType for fld in df.schema.fields}
        cols = [
            (_as_string(c, types[c]) if c in types else F.lit(None).cast("string")).alias(c)
            for c in ds.source_columns
        ]
        df = df.select(*cols, F.lit(None).cast("string").alias(CORRUPT_COLUMN), F.col("_metadata"))
        uri_of = {form: f.uri for local, f in members for form in _spark_uri_forms(local)}
        frames.append(_with_lineage(df, ds, uri_of, run_id))
    return BronzeRead(_union(frames), files, drift, skipped)


def _union(frames: list[DataFrame]) -> DataFrame | None:
    if not frames:
        return None
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


READERS = {"csv": read_csv_files, "jsonl": read_jsonl_files, "parquet": read_parquet_files}


def bronze_schema(ds: Dataset) -> T.StructType:
    return T.StructType(
        [T.StructField(c, T.StringType()) for c in ds.source_columns]
        + [
            T.StructField(CORRUPT_COLUMN, T.StringType()),
            T.StructField("_source_file", T.StringType()),
            T.StructField("_dt", T.StringType()),
            T.StructField("_ingested_at", T.TimestampType()),
            T.StructField("_run_id", T.StringType()),
        ]
    )


def read_bronze(
    spark: SparkSession, ds: Dataset, store: LandingStore, run_id: str, files: list[LandedFile] | None = None
) -> BronzeRead:
    """Read the dataset's landed files (all of them unless ``files`` is given) as bronze rows."""
    files = store.dataset_files(ds) if files is None else files
    result = READERS[ds.format](spark, ds, files, store, run_id)
    if result.df is None:
        result.df = spark.createDataFrame([], bronze_schema(ds))
    return result
