"""Column expressions that parse raw bronze strings into silver types.

Pure Spark native functions (no Python UDFs). Every parser returns ``null`` for a value that
cannot be parsed; the caller turns "present but null after parsing" into ``invalid_<col>``.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from etl_assets.registry import EMAIL_REGEX

# ISO-8601 with a zone (Z or +HH:MM), optional fraction; or "YYYY-MM-DD HH:MM:SS" meaning UTC.
_TS_ISO_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
_TS_SPACE_RE = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
_DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
_INT_RE = r"^[+-]?\d+(\.0+)?$"
_NUMBER_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"

# Money and rates: the contract's decimal types
MONEY = "decimal(18,2)"
RATE = "decimal(18,8)"


def clean(col: Column) -> Column:
    """Trim whitespace at both ends (any Unicode whitespace Java regex knows); empty -> null."""
    trimmed = F.regexp_replace(col, r"^[\s\u00a0\ufeff]+|[\s\u00a0\ufeff]+$", "")
    return F.when(trimmed == "", F.lit(None)).otherwise(trimmed)


def parse_timestamp(s: Column) -> Column:
    """ISO-8601 ``...T...Z|±HH:MM`` (fraction up to 9 digits, truncated to micros) or space form (UTC).

    A date alone (``YYYY-MM-DD``) is not a timestamp: null, so the caller flags ``invalid_<col>``.
    Neither form depends on the session time zone (the space form is read as ``...Z``)."""
    # Spark parses up to microseconds; longer fractions are cut to 6 digits first.
    iso = F.regexp_replace(s, r"(\.\d{6})\d+", "$1")
    return (
        F.when(
            s.rlike(_TS_ISO_RE),
            F.try_to_timestamp(iso, F.lit("yyyy-MM-dd'T'HH:mm:ss[.SSSSSS]XXX")),
        )
        .when(
            s.rlike(_TS_SPACE_RE),
            F.try_to_timestamp(F.concat(s, F.lit("Z")), F.lit("yyyy-MM-dd HH:mm:ssXXX")),
        )
        .otherwise(F.lit(None).cast("timestamp"))
    )


def utc_date(ts: Column) -> Column:
    """The UTC calendar date of a timestamp, whatever the session time zone."""
    return F.date_from_unix_date(F.floor(F.unix_micros(ts) / F.lit(86_400_000_000)).cast("int"))


def parse_date(s: Column) -> Column:
    """``YYYY-MM-DD``, read as UTC midnight (no ``try_to_date``: Spark 4.0, EMR's oldest Spark 4
    runtime, lacks it; this form does not depend on the session time zone either)."""
    midnight = F.try_to_timestamp(F.concat(s, F.lit("Z")), F.lit("yyyy-MM-ddXXX"))
    return F.when(s.rlike(_DATE_RE), utc_date(midnight)).otherwise(F.lit(None).cast("date"))


def parse_decimal(s: Column, type_: str) -> Column:
    """A decimal number, rounded half-up to the type's scale (Spark's decimal cast rounds half-up)."""
    wide = F.when(s.rlike(_NUMBER_RE), s.try_cast("decimal(38,10)"))
    return wide.try_cast(type_)


def parse_integer(s: Column) -> Column:
    return F.when(s.rlike(_INT_RE), s.try_cast("decimal(38,10)").try_cast("int"))


def parse_boolean(s: Column) -> Column:
    return F.lower(s).try_cast("boolean")


def parse_json(s: Column) -> Column:
    """The JSON text when it parses as JSON, else null."""
    return F.when(F.try_parse_json(s).isNotNull(), s)


def normalise_email(s: Column) -> Column:
    """``lower(trim(email))`` when it matches the contract's email pattern, else null."""
    e = F.lower(s)
    return F.when(e.rlike(EMAIL_REGEX), e)


PARSERS = {
    "timestamp": parse_timestamp,
    "date": parse_date,
    "money": lambda s: parse_decimal(s, MONEY),
    "rate": lambda s: parse_decimal(s, RATE),
    "integer": parse_integer,
    "boolean": parse_boolean,
}

SPARK_TYPES = {
    "string": "string",
    "money": MONEY,
    "rate": RATE,
    "integer": "int",
    "date": "date",
    "timestamp": "timestamp",
    "boolean": "boolean",
    "json": "string",
}
