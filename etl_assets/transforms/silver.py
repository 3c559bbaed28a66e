"""Bronze -> silver + quarantine: the contract's five steps, the same for every dataset.

``classify`` labels every bronze row with exactly one ``_outcome``:

- ``duplicate``   exact duplicate of an earlier row (step 1)
- ``quarantine``  fails a row rule (step 2) or, when current, a reference (step 4)
- ``superseded``  passes the row rules but is not the current version of its key (step 3)
- ``silver``      what is left (step 5)

so conservation (``bronze = duplicate + quarantined + superseded + silver``) holds by
construction, and one cached frame feeds the silver table, the quarantine table and the counts.
Everything is Spark native functions; nothing here knows about Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from etl_assets.registry import (
    CORRUPT_COLUMN,
    EVENT_NAMES,
    INDUSTRIES,
    LINEAGE_COLUMNS,
    ORDER_STATUSES,
    STAGES,
    Dataset,
)
from etl_assets.transforms.parsing import (
    MONEY,
    PARSERS,
    clean,
    normalise_email,
    parse_date,
    parse_json,
    utc_date,
)

OUTCOMES = ("duplicate", "quarantine", "superseded", "silver")
P = "__p_"  # prefix of the parsed (typed, normalised) value of a source column


@dataclass(frozen=True)
class Pii:
    """The PII salt and AES key (16/24/32 ASCII characters)."""

    salt: str
    key: str

    def __post_init__(self):
        if len(self.key) not in (16, 24, 32) or not self.key.isascii():
            raise ValueError("ETL_PII_KEY must be 16, 24 or 32 ASCII characters")
        if not self.salt:
            raise ValueError("ETL_PII_SALT must not be empty")

    def hash(self, value: Column) -> Column:
        return F.sha2(F.concat(F.lit(self.salt), value), 256)

    def encrypt(self, value: Column) -> Column:
        return F.base64(F.aes_encrypt(value.cast("binary"), F.lit(self.key), F.lit("GCM")))

    def decrypt(self, value: Column) -> Column:
        return F.aes_decrypt(F.unbase64(value), F.lit(self.key), F.lit("GCM")).cast("string")


def p(name: str) -> Column:
    return F.col(P + name)


def _reasons(*pairs: tuple[Column, str]) -> Column:
    """The sorted, distinct array of reasons whose condition is true (null conditions are false)."""
    if not pairs:
        return F.array().cast("array<string>")
    flagged = F.array(*[F.when(cond, F.lit(reason)) for cond, reason in pairs])
    return F.array_sort(F.array_distinct(F.array_compact(flagged)))


# -- step 1 ---------------------------------------------------------------------------------


def mark_duplicates(bronze: DataFrame, ds: Dataset) -> DataFrame:
    """``_is_duplicate``: equal in every source column (and raw text) to an earlier row.

    The copy kept is the earliest delivery (``_dt``, then ``_source_file``)."""
    cols = ds.source_columns + [CORRUPT_COLUMN]
    w = Window.partitionBy(*[F.col(c) for c in cols]).orderBy("_dt", "_source_file", "_ingested_at")
    return bronze.withColumn("_is_duplicate", F.row_number().over(w) > 1)


# -- step 2 ---------------------------------------------------------------------------------


def parse_columns(df: DataFrame, ds: Dataset) -> DataFrame:
    """Add ``__p_<col>``: trimmed, normalised and typed values of every source column."""
    exprs = []
    for c in ds.columns:
        v = clean(F.col(c.name))
        if c.norm == "upper":
            v = F.upper(v)
        elif c.norm == "lower":
            v = F.lower(v)
        elif c.norm == "email":
            v = normalise_email(v)
        if c.type in PARSERS:
            v = PARSERS[c.type](v)
        elif c.type == "json":
            v = parse_json(v)
        exprs.append(v.alias(P + c.name))
        # raw presence, to tell "missing" from "invalid"
        exprs.append(clean(F.col(c.name)).isNotNull().alias(f"__present_{c.name}"))
    return df.select("*", *exprs)


def _canonical(col: Column, vocabulary: tuple[str, ...]) -> Column:
    """The vocabulary entry equal to ``col`` ignoring case, else null."""
    expr = F.lit(None).cast("string")
    for word in reversed(vocabulary):
        expr = F.when(F.lower(col) == word.lower(), F.lit(word)).otherwise(expr)
    return expr


def rule_checks(ds: Dataset, known_currencies: list[str]) -> list[tuple[Column, str]]:
    """(failing condition, reason) for every row rule of the dataset."""
    checks: list[tuple[Column, str]] = []
    for name in ds.required:
        checks.append((~F.col(f"__present_{name}"), f"missing_{name}"))
    for c in ds.columns:
        if c.type in PARSERS:
            checks.append((F.col(f"__present_{c.name}") & p(c.name).isNull(), f"invalid_{c.name}"))
    known = F.array(*[F.lit(c) for c in sorted(set(known_currencies) | {"USD"})])
    cur_unknown = p("currency").isNotNull() & ~F.array_contains(known, p("currency"))
    n = ds.name
    if n == "accounts":
        checks.append((p("annual_revenue") < 0, "invalid_annual_revenue"))
    elif n == "opportunities":
        checks += [
            (p("amount") < 0, "invalid_amount"),
            (cur_unknown, "invalid_currency"),
            ((p("probability") < 0) | (p("probability") > 100), "invalid_probability"),
            (p("stage").isNotNull() & _canonical(p("stage"), STAGES).isNull(), "invalid_stage"),
        ]
    elif n == "customers":
        checks.append((~p("country").rlike("^[A-Z]{2}$"), "invalid_country"))
    elif n == "products":
        checks += [(p("unit_price") < 0, "invalid_unit_price"), (cur_unknown, "invalid_currency")]
    elif n == "orders":
        # 00:00 UTC of _dt + 2 days, whatever the session time zone
        future = F.timestamp_seconds((F.unix_date(parse_date(F.col("_dt"))) + 2) * 86_400)
        checks += [
            (p("quantity") < 1, "invalid_quantity"),
            (p("amount") < 0, "invalid_amount"),
            (cur_unknown, "invalid_currency"),
            (~p("status").isin(*ORDER_STATUSES), "invalid_status"),
            (p("order_ts") >= future, "future_order_ts"),
        ]
    elif n == "order_events":
        checks.append((~p("event_type").isin(*ORDER_STATUSES), "invalid_event_type"))
    elif n == "behavior":
        checks.append((~p("event_name").isin(*EVENT_NAMES), "invalid_event_name"))
    elif n == "rates":
        checks += [
            (p("base_ccy") != "USD", "invalid_base_ccy"),
            (p("rate") <= 0, "invalid_rate"),
            (~p("quote_ccy").rlike("^[A-Z]{3}$"), "invalid_quote_ccy"),
        ]
    return checks


def apply_rules(df: DataFrame, ds: Dataset, known_currencies: list[str]) -> DataFrame:
    """``_rule_reasons``: every failing row rule; a malformed line gets only ``malformed_record``."""
    rules = _reasons(*rule_checks(ds, known_currencies))
    malformed = F.array(F.lit("malformed_record"))
    out = df.withColumn(
        "_rule_reasons", F.when(F.col(CORRUPT_COLUMN).isNotNull(), malformed).otherwise(rules)
    )
    # dataset-specific normalisation that is not a rule
    if ds.name == "accounts":
        canon = _canonical(p("industry"), INDUSTRIES)
        out = out.withColumn(
            P + "industry",
            F.when(p("industry").isNull(), F.lit("Unknown")).otherwise(F.coalesce(canon, F.lit("Other"))),
        )
    if ds.name == "opportunities":
        out = out.withColumn(P + "stage", _canonical(p("stage"), STAGES))
    return out


# -- step 3 ---------------------------------------------------------------------------------


def mark_current(df: DataFrame, ds: Dataset) -> DataFrame:
    """``_is_current``: the one row kept per key among rows that pass the rules.

    Greatest version, ties to the latest ``_dt`` (then the later file, then the content, so the
    choice is deterministic); without a version column the earliest ``_dt`` wins."""
    eligible = (~F.col("_is_duplicate")) & (F.size("_rule_reasons") == 0)
    content = F.sha2(F.to_json(F.struct(*[F.col(c) for c in ds.source_columns])), 256)
    if ds.version:
        order = [p(ds.version).desc(), F.col("_dt").desc(), F.col("_source_file").desc(), content.desc()]
    else:
        order = [F.col("_dt").asc(), F.col("_source_file").asc(), content.asc()]
    w = Window.partitionBy(*[p(k) for k in ds.key]).orderBy(eligible.desc(), *order)
    return df.withColumn("_is_current", eligible & (F.row_number().over(w) == 1))


# -- step 4 ---------------------------------------------------------------------------------


def known_currencies(fx: DataFrame | None) -> list[str]:
    """The contract's known currencies besides ``USD``: every ``quote_ccy`` of silver fx rates."""
    if fx is None:
        return []
    return sorted(r[0] for r in fx.select("quote_ccy").distinct().collect() if r[0] is not None)


def asof_rates(keys: DataFrame, fx: DataFrame) -> DataFrame:
    """For distinct (``_ccy``, ``_fx_date``) pairs, the silver rate of the greatest
    ``rate_date`` on or before ``_fx_date`` (null when there is none)."""
    rates = fx.select(
        F.col("quote_ccy").alias("_ccy"),
        F.col("rate_date").alias("_fx_date"),
        F.col("rate").alias("_rate"),
        F.lit(0).alias("_side"),
    )
    wanted = keys.select("_ccy", "_fx_date", F.lit(None).cast(fx.schema["rate"].dataType).alias("_rate"), F.lit(1).alias("_side"))
    w = (
        Window.partitionBy("_ccy")
        .orderBy("_fx_date", "_side")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    return (
        rates.unionByName(wanted)
        .withColumn("_asof_rate", F.last("_rate", ignorenulls=True).over(w))
        .where(F.col("_side") == 1)
        .select("_ccy", "_fx_date", "_asof_rate")
    )


def apply_references(
    df: DataFrame, ds: Dataset, targets: dict[str, DataFrame], fx: DataFrame | None
) -> DataFrame:
    """``_ref_reasons`` for current rows (orphans, missing FX rate) and ``amount_usd``."""
    checks: list[tuple[Column, str]] = []
    current = F.col("_is_current")
    for i, ref in enumerate(ds.references):
        flag = f"__ref_{i}"
        target_keys = (
            targets[ref.target].select(F.col(ref.target_column).alias(f"__refkey_{i}")).distinct()
            .withColumn(flag, F.lit(True))
        )
        df = df.join(F.broadcast(target_keys) if ref.target != "orders" else target_keys,
                     p(ref.column) == F.col(f"__refkey_{i}"), "left").drop(f"__refkey_{i}")
        checks.append((current & p(ref.column).isNotNull() & F.col(flag).isNull(), ref.reason))
    if ds.fx_date_column:
        if fx is None:
            raise ValueError(f"{ds.name} needs silver fx rates for the USD conversion")
        # the as-of date: the UTC date of the timestamp (order_ts; opportunities' created_date)
        fx_col = ds.column(ds.fx_date_column)
        fx_date = p(fx_col.name) if fx_col.type == "date" else utc_date(p(fx_col.name))
        df = df.withColumn("_ccy", p("currency")).withColumn("_fx_date", fx_date)
        pairs = df.where(current & (F.col("_ccy") != "USD")).select("_ccy", "_fx_date").distinct()
        df = df.join(F.broadcast(asof_rates(pairs, fx)), ["_ccy", "_fx_date"], "left")
        usd = F.col("_ccy") == "USD"
        df = df.withColumn(
            "amount_usd",
            F.when(usd, p("amount"))
            .otherwise(F.round(p("amount") / F.col("_asof_rate"), 2))
            .cast(MONEY),
        )
        checks.append((current & ~usd & F.col("_asof_rate").isNull(), "missing_fx_rate"))
    return df.withColumn("_ref_reasons", _reasons(*checks))


# -- the whole pipeline ---------------------------------------------------------------------


def classify(
    bronze: DataFrame,
    ds: Dataset,
    targets: dict[str, DataFrame] | None = None,
    fx: DataFrame | None = None,
    known_currencies: list[str] | None = None,
) -> DataFrame:
    """Label every bronze row with ``_outcome`` and ``_reasons`` (see module docstring)."""
    targets = targets or {}
    df = mark_duplicates(bronze, ds)
    df = parse_columns(df, ds)
    df = apply_rules(df, ds, known_currencies or [])
    df = mark_current(df, ds)
    df = apply_references(df, ds, targets, fx)
    outcome = (
        F.when(F.col("_is_duplicate"), F.lit("duplicate"))
        .when(F.size("_rule_reasons") > 0, F.lit("quarantine"))
        .when(~F.col("_is_current"), F.lit("superseded"))
        .when(F.size("_ref_reasons") > 0, F.lit("quarantine"))
        .otherwise(F.lit("silver"))
    )
    reasons = F.when(F.size("_rule_reasons") > 0, F.col("_rule_reasons")).otherwise(F.col("_ref_reasons"))
    return df.withColumn("_outcome", outcome).withColumn(
        "_reasons", F.when(outcome == "quarantine", reasons).otherwise(F.array().cast("array<string>"))
    )


def silver_columns(ds: Dataset, pii: Pii) -> list[Column]:
    cols: list[Column] = []
    for c in ds.columns:
        if c.pii == "drop":
            continue
        if c.pii == "email":
            e = p(c.name)
            cols += [
                pii.hash(e).alias(f"{c.name}_hash"),
                F.when(e.isNotNull(), pii.encrypt(e)).alias(f"{c.name}_enc"),
                F.substring_index(e, "@", -1).alias(f"{c.name}_domain"),
            ]
            continue
        cols.append(p(c.name).alias(c.name))
    if ds.name == "orders":
        cols += [utc_date(p("order_ts")).alias("order_date"), F.col("amount_usd")]
    elif ds.name == "opportunities":
        cols.append(F.col("amount_usd"))
    elif ds.name == "behavior":
        cols.append(F.filter(F.array(p("url_1"), p("url_2")), lambda u: u.isNotNull()).alias("urls"))
    cols += [F.col(c) for c in LINEAGE_COLUMNS]
    return cols


def silver_frame(classified: DataFrame, ds: Dataset, pii: Pii) -> DataFrame:
    return classified.where(F.col("_outcome") == "silver").select(*silver_columns(ds, pii))


def quarantine_columns(ds: Dataset, pii: Pii) -> list[Column]:
    """Raw values as delivered; PII columns encrypted as ``<col>_enc``; lineage; ``_reasons``.

    The raw text of a malformed line (``_corrupt_record``) of a dataset with PII columns can hold
    a raw email, name or phone number, so for those datasets it is published only encrypted, as
    ``_corrupt_record_enc`` (the ``_corrupt_record`` column is dropped: no column that looks
    readable exists), and the fields parsed from such a line are null: they cannot be trusted,
    and a broken line shifts PII into other columns (an unbalanced quote puts the rest of the
    line, email and phone included, into ``account_name``). Decrypt with
    ``aes_decrypt(unbase64(<col>_enc), key, 'GCM')``."""
    cols: list[Column] = []
    well_formed = F.col(CORRUPT_COLUMN).isNull()
    for c in ds.columns:
        raw = F.when(well_formed, F.col(c.name)) if ds.has_pii else F.col(c.name)
        if c.pii:
            cols.append(pii.encrypt(raw).alias(f"{c.name}_enc"))
        else:
            cols.append(raw.alias(c.name))
    if ds.has_pii:
        cols.append(pii.encrypt(F.col(CORRUPT_COLUMN)).alias(CORRUPT_COLUMN + "_enc"))
    else:
        cols.append(F.col(CORRUPT_COLUMN))
    cols += [F.col(c) for c in LINEAGE_COLUMNS] + [F.col("_reasons")]
    return cols


def quarantine_frame(classified: DataFrame, ds: Dataset, pii: Pii) -> DataFrame:
    return classified.where(F.col("_outcome") == "quarantine").select(*quarantine_columns(ds, pii))


def invalid_json_nulled(ds: Dataset) -> Column | None:
    """Rows whose ``json`` column was present but not valid JSON (counted, not quarantined)."""
    conds = [F.col(f"__present_{c.name}") & p(c.name).isNull() for c in ds.columns if c.type == "json"]
    if not conds:
        return None
    cond = conds[0]
    for c in conds[1:]:
        cond = cond | c
    return cond


@dataclass
class OutcomeCounts:
    bronze_rows: int
    duplicate_row: int
    quarantined: int
    superseded: int
    silver_rows: int
    reasons: dict[str, int]
    invalid_json_nulled: int = 0
    # quarantined rows per distinct ``_reasons`` list (as delivered, not re-sorted)
    reason_lists: dict[tuple[str, ...], int] | None = None

    @property
    def conserved(self) -> bool:
        return self.bronze_rows == self.duplicate_row + self.quarantined + self.superseded + self.silver_rows


def outcome_counts(classified: DataFrame, ds: Dataset) -> OutcomeCounts:
    """All counts in ONE Spark job over the (cached) classified frame: rows per
    (``_outcome``, ``_reasons``) -- a few dozen groups -- summed up here."""
    keys = [F.col("_outcome"), F.col("_reasons")]
    nulled = invalid_json_nulled(ds)
    if nulled is not None:
        keys.append(F.coalesce(nulled & (F.col("_outcome") == "silver"), F.lit(False)).alias("_json_nulled"))
    groups = classified.groupBy(*keys).agg(F.count(F.lit(1)).alias("n")).collect()
    per_outcome = {o: 0 for o in OUTCOMES}
    reasons: dict[str, int] = {}
    lists: dict[tuple[str, ...], int] = {}
    json_nulled = 0
    for g in groups:
        n = g["n"]
        per_outcome[g["_outcome"]] = per_outcome.get(g["_outcome"], 0) + n
        if nulled is not None and g["_json_nulled"]:
            json_nulled += n
        if g["_outcome"] == "quarantine":
            rl = tuple(g["_reasons"] or ())
            lists[rl] = lists.get(rl, 0) + n
            for r in rl:
                reasons[r] = reasons.get(r, 0) + n
    return OutcomeCounts(
        bronze_rows=sum(g["n"] for g in groups),
        duplicate_row=per_outcome["duplicate"],
        quarantined=per_outcome["quarantine"],
        superseded=per_outcome["superseded"],
        silver_rows=per_outcome["silver"],
        reasons=dict(sorted(reasons.items())),
        invalid_json_nulled=json_nulled,
        reason_lists=lists,
    )
