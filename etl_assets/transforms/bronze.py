"""Landed files -> bronze: every delivered row, values as strings, plus lineage columns.

Files are read with Spark's own readers in PERMISSIVE mode, so a line that cannot be parsed is
kept with its raw text in ``_corrupt_record``. CSV files are grouped by header: each group is
read with its own header's columns, then mapped onto the contract's columns, so a file with
missing, extra or reordered columns still loads (missing -> null, extra ignored) and the
difference is reported as schema drift.

Hostile or broken files never stop the rest of the dataset:

- a file that cannot be read at all (a truncated or non-Parquet ``.parquet``, an unreadable CSV
  header) is **rejected**: it adds no rows, and ``BronzeRead.rejected`` names it with the error
  (the bronze asset reports it in its metadata, log and ``files_readable`` check);
- a CSV whose header holds none of the contract's columns (typically a wrong delimiter such as
  ``;``) is kept line by line: every data line becomes a ``_corrupt_record`` (silver:
  ``malformed_record``), so nothing is dropped and the file shows in the drift report;
- a CSV line with bytes that are not UTF-8 (Spark decodes them to U+FFFD) is kept as a
  ``_corrupt_record`` too (JSON Lines: Spark's JSON parser already does this), as is a JSON line
  nested deeper than the parser's limit (1,000 levels);
- zero-byte files are skipped and named (``BronzeRead.skipped``).

Errors of the landing store itself (an S3 object that cannot be downloaded) still raise
``LandingError``: the run fails and the file is retried by the next run, never lost.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl_assets.registry import CORRUPT_COLUMN, Dataset
from etl_assets.schemas import bronze_read_schema, spark_schema
from etl_assets.storage import LandedFile, LandingError, LandingStore, StoreReadError

BOM = "\ufeff"


@dataclass
class Drift:
    file: str
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    retyped: list[str] = field(default_factory=list)
    error: str = ""

    def describe(self) -> str:
        parts = [self.error] if self.error else []
        if self.missing:
            parts.append(f"missing {', '.join(self.missing)}")
        if self.extra:
            parts.append(f"extra {', '.join(self.extra)}")
        if self.retyped:
            parts.append(f"retyped {', '.join(self.retyped)}")
        return f"{self.file}: " + "; ".join(parts)


REPLACEMENT_CHAR = "\ufffd"  # what Spark's UTF-8 decoder makes of bytes that are not UTF-8


@dataclass
class BronzeRead:
    df: DataFrame | None
    files: list[LandedFile]
    drift: list[Drift]
    skipped: list[str]  # files with no content (zero bytes): nothing to load
    rejected: dict[str, str] = field(default_factory=dict)  # uri -> why it cannot be read at all


def _csv_header_line(store: LandingStore, f: LandedFile) -> str | None:
    """The header line's text (BOM and line end removed), None for an empty file."""
    if f.size == 0:
        return None
    first = store.head(f).split(b"\n", 1)[0]
    if not first.strip():
        return None
    return first.decode("utf-8", errors="replace").lstrip(BOM).rstrip("\r")


def _csv_header(store: LandingStore, f: LandedFile) -> list[str] | None:
    text = _csv_header_line(store, f)
    if text is None:
        return None
    try:
        return [h.strip() for h in next(csv.reader(io.StringIO(text)))]
    except (csv.Error, StopIteration) as e:
        raise LandingError(f"{f.uri}: unreadable CSV header: {e}") from e


def no_contract_column(ds: Dataset, header: list[str]) -> bool:
    """A header sharing no column with the contract (a wrong delimiter, not this dataset's file)."""
    contract = {c.lower() for c in ds.source_columns}
    return not any(h.lower() in contract for h in header)


# Parquet types the contract expects (orders): timestamps, integer counts, decimal money
PARQUET_TYPES = {"timestamp": "timestamp", "integer": "int", "money": "decimal", "rate": "decimal"}


def _drift(ds: Dataset, names: list[str], uri: str, retyped: list[str] | None = None) -> Drift | None:
    """Missing and extra columns of a file against the contract (names compared ignoring case)."""
    contract = ds.source_columns
    lower = {n.lower() for n in names}
    missing = [c for c in contract if c.lower() not in lower]
    extra = [n for n in names if n.lower() not in {c.lower() for c in contract}]
    if missing or extra or retyped:
        return Drift(file=uri, missing=missing, extra=extra, retyped=retyped or [])
    return None


def csv_drift(ds: Dataset, header: list[str], uri: str) -> Drift | None:
    d = _drift(ds, header, uri)
    if d and no_contract_column(ds, header):
        d.error = "no column of the contract in the header (wrong delimiter?): every line kept as malformed"
    return d


def parquet_schema(source, uri: str):
    """The schema in a Parquet footer: ``source`` is a path or a seekable binary file."""
    try:
        return pq.read_schema(source)
    except StoreReadError:
        raise  # the store could not serve the bytes: not the file's fault
    except Exception as e:  # truncated, not Parquet, ...
        raise LandingError(f"{uri}: cannot read Parquet file: {e}") from e


def parquet_drift(ds: Dataset, schema, uri: str) -> Drift | None:
    retyped = []
    for c in ds.columns:
        want = PARQUET_TYPES.get(c.type)
        if c.name in schema.names and want:
            got = str(schema.field(c.name).type)
            if not got.startswith(want):
                retyped.append(f"{c.name} ({got}, expected {want})")
    return _drift(ds, schema.names, uri, retyped)


def jsonl_drift(ds: Dataset, head: bytes, uri: str) -> Drift | None:
    """Keys of the first JSON object line against the contract (JSON Lines have no header)."""
    lines = head.split(b"\n")
    complete = lines if len(head) < 1 << 20 else lines[:-1]  # the last one may be cut off
    for raw in complete:
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python's stack
            continue
        return _drift(ds, list(obj), uri) if isinstance(obj, dict) else None
    return None


def file_drift(ds: Dataset, store: LandingStore, f: LandedFile) -> Drift | None:
    """Schema drift of one landed file without Spark (header, footer or first line)."""
    if f.size == 0:
        return None
    if ds.format == "csv":
        header = _csv_header(store, f)
        return csv_drift(ds, header, f.uri) if header else None
    if ds.format == "parquet":
        with store.open_binary(f) as fh:
            return parquet_drift(ds, parquet_schema(fh, f.uri), f.uri)
    return jsonl_drift(ds, store.head(f), f.uri)


#: a file's ``_dt``: the ``dt=YYYY-MM-DD`` folder that holds it (none when its folder is not one)
FILE_DAY_PATTERN = r"/dt=([0-9]{4}-[0-9]{2}-[0-9]{2})/[^/]*$"  # [0-9]: Python's \d also takes other digits


def file_day(uri: str) -> str | None:
    """The ``_dt`` that bronze gives the rows of the file at ``uri``."""
    m = re.search(FILE_DAY_PATTERN, uri)
    return m.group(1) if m else None


def _with_lineage(df: DataFrame, ds: Dataset, uri_of: dict[str, str], run_id: str) -> DataFrame:
    """Select the contract columns and add ``_source_file``, ``_dt``, ``_ingested_at``, ``_run_id``."""
    path = F.col("_metadata.file_path")
    mapping = F.create_map(*[x for k, v in uri_of.items() for x in (F.lit(k), F.lit(v))])
    # Spark reports file paths as URIs (file:/..., percent-encoded, but '+' and non-ASCII kept);
    # map them back to landing URIs. '+' is protected so that url_decode does not make it a space.
    decoded = F.url_decode(F.regexp_replace(path, r"\+", "%2B"))
    src = F.coalesce(mapping[path], mapping[decoded], path)
    dt = F.regexp_extract(src, FILE_DAY_PATTERN, 1)
    return df.select(
        *[F.col(c) for c in ds.source_columns],
        F.col(CORRUPT_COLUMN),
        src.alias("_source_file"),
        F.when(dt != "", dt).alias("_dt"),
        F.current_timestamp().alias("_ingested_at"),
        F.lit(run_id).alias("_run_id"),
    )


def _spark_uri_forms(path: str) -> list[str]:
    """The spellings Spark may report for a path it read (to map it back to a landing URI)."""
    if "://" in path:  # s3a://bucket/key
        return [path]
    from pathlib import Path

    p = Path(path).absolute()
    return [p.as_uri(), "file:" + str(p), str(p)]


def _undecodable(cols: list[str]):
    """True for a row holding a value that was not valid UTF-8 (decoded to U+FFFD)."""
    return F.concat_ws("", *[F.col(c) for c in cols]).contains(REPLACEMENT_CHAR)


def _read_csv_as_lines(spark, ds, members, headers: dict[str, str], run_id) -> DataFrame:
    """Files whose header matches nothing in the contract: every data line is a corrupt record."""
    uri_of = {form: f.uri for local, f in members for form in _spark_uri_forms(local)}
    df = spark.read.text([m[0] for m in members]).select("value", "_metadata")
    # the header line of each file is not data (compared as text, BOM and CR removed)
    hdr = F.create_map(*[x for form, h in headers.items() for x in (F.lit(form), F.lit(h))])
    path = F.col("_metadata.file_path")
    line = F.regexp_replace(F.regexp_replace(F.make_valid_utf8(F.col("value")), "^\ufeff", ""), "\r$", "")
    is_header = F.coalesce(line == F.coalesce(hdr[path], hdr[F.url_decode(F.regexp_replace(path, r"\+", "%2B"))]),
                           F.lit(False))
    df = df.where(~is_header & (F.trim(line) != ""))
    df = df.select(
        *[F.lit(None).cast("string").alias(c) for c in ds.source_columns],
        line.alias(CORRUPT_COLUMN),
        F.col("_metadata"),
    )
    return _with_lineage(df, ds, uri_of, run_id)


def read_csv_files(spark, ds, files, store, run_id) -> BronzeRead:
    groups: dict[tuple[str, ...], list[tuple[str, LandedFile]]] = {}
    drift, skipped, rejected = [], [], {}
    unparsable: list[tuple[str, LandedFile]] = []
    unparsable_headers: dict[str, str] = {}
    contract = ds.source_columns
    for f in files:
        try:
            header = _csv_header(store, f)
        except LandingError as e:
            rejected[f.uri] = str(e)
            continue
        if header is None:
            skipped.append(f.uri)
            continue
        local = store.spark_path(f)
        d = csv_drift(ds, header, f.uri)
        if d:
            drift.append(d)
        if no_contract_column(ds, header):
            unparsable.append((local, f))
            for form in _spark_uri_forms(local):
                unparsable_headers[form] = _csv_header_line(store, f)
            continue
        groups.setdefault(tuple(header), []).append((local, f))
    frames = []
    if unparsable:
        frames.append(_read_csv_as_lines(spark, ds, unparsable, unparsable_headers, run_id))
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
            .option("multiLine", True)  # RFC 4180: a quoted field may hold line breaks
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
        # a line with bytes that are not UTF-8 cannot be trusted: kept whole as a corrupt record
        corrupt = F.coalesce(
            F.col(CORRUPT_COLUMN),
            F.when(_undecodable(positional), F.to_csv(F.struct(*[F.col(p) for p in positional]))),
        )
        df = df.select(*select, corrupt.alias(CORRUPT_COLUMN), F.col("_metadata"))
        frames.append(_with_lineage(df, ds, uri_of, run_id))
    return BronzeRead(_union(frames), files, drift, skipped, rejected)


def read_jsonl_files(spark, ds, files, store, run_id) -> BronzeRead:
    members = []
    skipped = []
    for f in files:
        if f.size == 0:
            skipped.append(f.uri)
            continue
        members.append((store.spark_path(f), f))
    if not members:
        return BronzeRead(None, files, [], skipped)
    df = (
        spark.read.schema(bronze_read_schema(ds))
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
        .option("encoding", "UTF-8")
        .json([m[0] for m in members])
    )
    uri_of = {form: f.uri for local, f in members for form in _spark_uri_forms(local)}
    # Spark keeps a corrupt line's raw bytes, which may not be UTF-8: bronze stores valid UTF-8
    # (invalid bytes as U+FFFD), or Parquet readers that decode strings would fail on the table
    df = df.withColumn(CORRUPT_COLUMN, F.make_valid_utf8(F.col(CORRUPT_COLUMN)))
    return BronzeRead(_with_lineage(df.select("*", "_metadata"), ds, uri_of, run_id), files, [], skipped)


def _as_string(col: str, dtype: T.DataType):
    c = F.col(f"`{col}`")
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        # UTC ISO-8601, the same text form CSV sources use
        return F.date_format(c.cast("timestamp"), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
    if isinstance(dtype, (T.StringType,)):
        return F.make_valid_utf8(c)  # Parquet strings are not validated when read
    if isinstance(dtype, (T.StructType, T.ArrayType, T.MapType)):
        return F.to_json(c)
    return c.cast("string")


def read_parquet_files(spark, ds, files, store, run_id) -> BronzeRead:
    groups: dict[str, list[tuple[str, LandedFile]]] = {}
    drift, skipped, rejected = [], [], {}
    for f in files:
        if f.size == 0:
            skipped.append(f.uri)
            continue
        # the footer is read with pyarrow before Spark reads the file (on S3 by ranged GETs);
        # a file without a readable footer (truncated, not Parquet) is rejected, the rest go on;
        # a store error (S3 kept failing) raises: nothing is marked ingested, retried next run
        with store.open_binary(f) as fh:
            try:
                schema = parquet_schema(fh, f.uri)
            except LandingError as e:
                rejected[f.uri] = str(e)
                continue
        d = parquet_drift(ds, schema, f.uri)
        if d:
            drift.append(d)
        groups.setdefault(str(schema), []).append((store.spark_path(f), f))
    frames = []
    for members in groups.values():
        df = spark.read.parquet(*[m[0] for m in members])
        types = {fld.name: fld.dataType for fld in df.schema.fields}
        cols = [
            (_as_string(c, types[c]) if c in types else F.lit(None).cast("string")).alias(c)
            for c in ds.source_columns
        ]
        df = df.select(*cols, F.col("_metadata"))
        # a row holding text that is not UTF-8 is kept whole as a corrupt record, as in CSV
        src = ds.source_columns
        corrupt = F.when(_undecodable(src), F.to_json(F.struct(*[F.col(c) for c in src])))
        df = df.select(*src, corrupt.alias(CORRUPT_COLUMN), F.col("_metadata"))
        uri_of = {form: f.uri for local, f in members for form in _spark_uri_forms(local)}
        frames.append(_with_lineage(df, ds, uri_of, run_id))
    return BronzeRead(_union(frames), files, drift, skipped, rejected)


def _union(frames: list[DataFrame]) -> DataFrame | None:
    if not frames:
        return None
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


READERS = {"csv": read_csv_files, "jsonl": read_jsonl_files, "parquet": read_parquet_files}


def bronze_schema(ds: Dataset) -> T.StructType:
    """The bronze table's schema, from its Pandera model."""
    return spark_schema(f"bronze/{ds.name}")


def read_bronze(
    spark: SparkSession, ds: Dataset, store: LandingStore, run_id: str, files: list[LandedFile] | None = None
) -> BronzeRead:
    """Read the dataset's landed files (all of them unless ``files`` is given) as bronze rows."""
    files = store.dataset_files(ds) if files is None else files
    result = READERS[ds.format](spark, ds, files, store, run_id)
    if result.df is None:
        result.df = spark.createDataFrame([], bronze_schema(ds))
    return result
