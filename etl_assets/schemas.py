"""Pandera ``DataFrameModel``s (pyspark backend) for every bronze, silver, quarantine and gold table.

These models are the single source of truth for each table's columns, types, nullability and
constraints. They drive:

- the read schema of raw files (``bronze_read_schema``: the contract's source columns, as text);
- the column schema shown in the Dagster UI (``column_schema`` -> ``dagster/column_schema``);
- validation (``etl_assets.checks.validate``), which translates each model's checks into Spark
  column expressions evaluated in ONE aggregation pass over the frame being published (Pandera's
  own pyspark backend runs one Spark job per check);
- the data dictionary (``etl_assets.docs``).

Bronze, silver and quarantine models are generated from the dataset registry, so a new dataset
gets its models by being registered; the gold models are written out as classes.
"""

from __future__ import annotations

import pandera.pyspark as pa
from dagster import TableColumn, TableColumnConstraints, TableSchema
from pyspark.sql import types as T

from etl_assets.registry import (
    CORRUPT_COLUMN,
    DATASETS,
    EVENT_NAMES,
    INDUSTRIES,
    ORDER_STATUSES,
    STAGES,
    Dataset,
)

MONEY = T.DecimalType(18, 2)
RATE = T.DecimalType(18, 8)
SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "money": MONEY,
    "rate": RATE,
    "integer": T.IntegerType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
    "boolean": T.BooleanType(),
    "json": T.StringType(),
}
HEX64 = r"^[0-9a-f]{64}$"

# Constraints of silver columns beyond type and nullability (pandera Field keyword arguments).
# They restate, as post-conditions on the published table, what the silver row rules enforce.
SILVER_CONSTRAINTS: dict[tuple[str, str], dict] = {
    ("accounts", "annual_revenue"): {"ge": 0},
    ("accounts", "industry"): {"isin": [*INDUSTRIES, "Other", "Unknown"]},
    ("accounts", "billing_country"): {},
    ("opportunities", "amount"): {"ge": 0},
    ("opportunities", "probability"): {"in_range": {"min_value": 0, "max_value": 100}},
    ("opportunities", "stage"): {"isin": list(STAGES)},
    ("opportunities", "currency"): {"str_matches": r"^[A-Z]{3}$"},
    ("customers", "country"): {"str_matches": r"^[A-Z]{2}$"},
    ("products", "unit_price"): {"ge": 0},
    ("products", "currency"): {"str_matches": r"^[A-Z]{3}$"},
    ("orders", "quantity"): {"ge": 1},
    ("orders", "amount"): {"ge": 0},
    ("orders", "currency"): {"str_matches": r"^[A-Z]{3}$"},
    ("orders", "status"): {"isin": list(ORDER_STATUSES)},
    ("order_events", "event_type"): {"isin": list(ORDER_STATUSES)},
    ("behavior", "event_name"): {"isin": list(EVENT_NAMES)},
    ("rates", "base_ccy"): {"eq": "USD"},
    ("rates", "rate"): {"gt": 0},
    ("rates", "quote_ccy"): {"str_matches": r"^[A-Z]{3}$"},
}


def _model(name: str, fields: list[tuple[str, T.DataType, dict]], doc: str) -> type[pa.DataFrameModel]:
    """Build a DataFrameModel class from (column, spark type, Field kwargs)."""
    ns: dict = {"__annotations__": {}, "__doc__": doc, "__module__": __name__}
    for col, dtype, kwargs in fields:
        attr = col
        if col.startswith("_"):  # pandera treats _names as private: alias them
            attr, kwargs = f"col{col}", {**kwargs, "alias": col}
        ns["__annotations__"][attr] = dtype
        ns[attr] = pa.Field(**kwargs)
    ns["Config"] = type("Config", (), {"strict": True, "name": name})
    return type(name, (pa.DataFrameModel,), ns)


def _lineage_fields(nullable_dt: bool = True) -> list[tuple[str, T.DataType, dict]]:
    return [
        ("_source_file", T.StringType(), {"nullable": False, "description": "Landed file the row came from"}),
        ("_dt", T.StringType(), {"nullable": nullable_dt, "description": "Delivery date (the dt= folder)"}),
        ("_ingested_at", T.TimestampType(), {"nullable": False, "description": "When bronze ingested the row"}),
        ("_run_id", T.StringType(), {"nullable": False, "description": "Dagster run that ingested the row"}),
    ]


def bronze_model(ds: Dataset) -> type[pa.DataFrameModel]:
    fields = [(c.name, T.StringType(), {"nullable": True, "description": c.description}) for c in ds.columns]
    fields.append((CORRUPT_COLUMN, T.StringType(), {"nullable": True, "description": "Raw text of a line that could not be parsed"}))
    return _model(f"Bronze_{ds.name}", fields + _lineage_fields(), f"bronze/{ds.name}: every delivered row, as text.")


def silver_model(ds: Dataset) -> type[pa.DataFrameModel]:
    fields: list[tuple[str, T.DataType, dict]] = []
    required = set(ds.required) | set(ds.key)
    for c in ds.columns:
        if c.pii == "drop":
            continue
        if c.pii == "email":
            fields += [
                (f"{c.name}_hash", T.StringType(), {"nullable": True, "str_matches": HEX64,
                                                    "description": f"SHA-256 of salt + normalised {c.name} (PII pseudonym)"}),
                (f"{c.name}_enc", T.StringType(), {"nullable": True,
                                                   "description": f"base64 AES-GCM of the normalised {c.name} (PII, decryptable)"}),
                (f"{c.name}_domain", T.StringType(), {"nullable": True, "description": f"Domain of a valid {c.name}"}),
            ]
            continue
        kwargs = {"nullable": c.name not in required, "description": c.description}
        if ds.name == "accounts" and c.name == "industry":
            kwargs["nullable"] = False
        kwargs.update(SILVER_CONSTRAINTS.get((ds.name, c.name), {}))
        fields.append((c.name, SPARK_TYPES[c.type], kwargs))
    if ds.name == "orders":
        fields += [
            ("order_date", T.DateType(), {"nullable": False, "description": "UTC date of order_ts"}),
            ("amount_usd", MONEY, {"nullable": False, "ge": 0, "description": "amount / as-of FX rate, half-up to cents"}),
        ]
    elif ds.name == "opportunities":
        fields.append(("amount_usd", MONEY, {"nullable": False, "ge": 0, "description": "amount / FX rate as of the UTC date of created_date, half-up to cents"}))
    elif ds.name == "behavior":
        fields.append(("urls", T.ArrayType(T.StringType(), True), {"nullable": False, "description": "Non-null url_1, url_2"}))
    return _model(f"Silver_{ds.name}", fields + _lineage_fields(nullable_dt=False),
                  f"silver/{ds.name}: current, typed, validated rows, one per {', '.join(ds.key)}.")


def quarantine_model(ds: Dataset) -> type[pa.DataFrameModel]:
    fields = []
    malformed = " (null for a malformed line)" if ds.has_pii else ""
    for c in ds.columns:
        if c.pii:
            fields.append((f"{c.name}_enc", T.StringType(), {"nullable": True, "description": f"Raw {c.name}, AES-GCM encrypted (PII){malformed}"}))
        else:
            fields.append((c.name, T.StringType(), {"nullable": True, "description": f"Raw {c.name} as delivered{malformed}"}))
    if ds.has_pii:  # the raw line may hold PII: published encrypted only
        fields.append((CORRUPT_COLUMN + "_enc", T.StringType(), {"nullable": True,
                       "description": "Raw text of a malformed line, AES-GCM encrypted (may hold PII)"}))
    else:
        fields.append((CORRUPT_COLUMN, T.StringType(), {"nullable": True, "description": "Raw text of a malformed line"}))
    fields += _lineage_fields()
    fields.append(("_reasons", T.ArrayType(T.StringType(), True), {"nullable": False, "description": "Sorted array of every failing rule"}))
    return _model(f"Quarantine_{ds.name}", fields, f"quarantine/{ds.name}: rejected rows with their reasons.")


# -- gold ------------------------------------------------------------------------------------


class FactOrders(pa.DataFrameModel):
    """gold/fact_orders: one row per silver order, in USD, with its final status."""

    order_id: T.StringType() = pa.Field(nullable=False, description="Order identifier (primary key)")
    customer_id: T.StringType() = pa.Field(nullable=False, description="Customer (silver/customers)")
    product_id: T.StringType() = pa.Field(nullable=False, description="Product (silver/products)")
    order_date: T.DateType() = pa.Field(nullable=False, description="UTC date of order_ts")
    order_ts: T.TimestampType() = pa.Field(nullable=False, description="Order time, UTC")
    quantity: T.IntegerType() = pa.Field(nullable=False, ge=1, description="Units")
    amount: MONEY = pa.Field(nullable=False, ge=0, description="Amount in the order currency")
    currency: T.StringType() = pa.Field(nullable=False, str_matches=r"^[A-Z]{3}$", description="Order currency")
    amount_usd: MONEY = pa.Field(nullable=False, ge=0, description="Amount in USD, half-up to cents")
    final_status: T.StringType() = pa.Field(nullable=False, isin=list(ORDER_STATUSES), description="Latest order event type, else the order status")
    is_revenue: T.BooleanType() = pa.Field(nullable=False, description="final_status not CANCELLED/RETURNED")

    class Config:
        strict = True
        name = "FactOrders"


class Customer360(pa.DataFrameModel):
    """gold/customer_360: one row per silver customer."""

    customer_id: T.StringType() = pa.Field(nullable=False, description="Customer (primary key)")
    email_hash: T.StringType() = pa.Field(nullable=True, str_matches=HEX64, description="Salted SHA-256 of the email")
    country: T.StringType() = pa.Field(nullable=True, description="Customer country")
    segment: T.StringType() = pa.Field(nullable=True, description="Customer segment")
    signup_date: T.DateType() = pa.Field(nullable=True, description="Sign-up date")
    total_orders: T.LongType() = pa.Field(nullable=False, ge=0, description="Count of fact_orders")
    revenue_usd: MONEY = pa.Field(nullable=False, ge=0, description="Sum of amount_usd of revenue orders")
    first_order_date: T.DateType() = pa.Field(nullable=True, description="Earliest order date")
    last_order_date: T.DateType() = pa.Field(nullable=True, description="Latest order date")
    total_events: T.LongType() = pa.Field(nullable=False, ge=0, description="Silver behaviour rows")
    total_sessions: T.LongType() = pa.Field(nullable=False, ge=0, description="Distinct sessions")
    last_activity_ts: T.TimestampType() = pa.Field(nullable=True, description="Latest event time")
    crm_account_id: T.StringType() = pa.Field(nullable=True, description="Matched CRM account")
    industry: T.StringType() = pa.Field(nullable=False, isin=[*INDUSTRIES, "Other", "Unknown"], description="Industry of the matched account")
    annual_revenue: MONEY = pa.Field(nullable=True, ge=0, description="Annual revenue of the matched account")
    open_pipeline_usd: MONEY = pa.Field(nullable=False, ge=0, description="Open opportunity amount in USD")
    ltv_tier: T.StringType() = pa.Field(nullable=False, isin=["platinum", "gold", "silver", "none"], description="Tier by revenue_usd")

    class Config:
        strict = True
        name = "Customer360"


class ProductPerformanceDaily(pa.DataFrameModel):
    """gold/product_performance_daily: one row per (order_date, product_id)."""

    order_date: T.DateType() = pa.Field(nullable=False, description="Order date (key)")
    product_id: T.StringType() = pa.Field(nullable=False, description="Product (key)")
    category: T.StringType() = pa.Field(nullable=True, description="Product category")
    orders: T.LongType() = pa.Field(nullable=False, ge=1, description="Orders")
    units: T.LongType() = pa.Field(nullable=False, ge=1, description="Units over all orders")
    revenue_usd: MONEY = pa.Field(nullable=False, ge=0, description="Revenue of revenue orders")
    returned_units: T.LongType() = pa.Field(nullable=False, ge=0, description="Units of RETURNED orders")
    return_rate: T.DecimalType(10, 4) = pa.Field(nullable=False, in_range={"min_value": 0, "max_value": 1}, description="returned_units / units, half-up to 4 places")

    class Config:
        strict = True
        name = "ProductPerformanceDaily"


class RevenueByGeography(pa.DataFrameModel):
    """gold/revenue_by_geography: revenue orders per (month, country)."""

    month: T.DateType() = pa.Field(nullable=False, description="First day of the month (key)")
    country: T.StringType() = pa.Field(nullable=True, description="Customer country (key)")
    orders: T.LongType() = pa.Field(nullable=False, ge=1, description="Revenue orders")
    customers: T.LongType() = pa.Field(nullable=False, ge=1, description="Distinct customers")
    revenue_usd: MONEY = pa.Field(nullable=False, ge=0, description="Revenue in USD")

    class Config:
        strict = True
        name = "RevenueByGeography"


class RevenueByIndustry(pa.DataFrameModel):
    """gold/revenue_by_industry: revenue orders per (month, industry)."""

    month: T.DateType() = pa.Field(nullable=False, description="First day of the month (key)")
    industry: T.StringType() = pa.Field(nullable=False, description="Industry from customer_360 (key)")
    orders: T.LongType() = pa.Field(nullable=False, ge=1, description="Revenue orders")
    revenue_usd: MONEY = pa.Field(nullable=False, ge=0, description="Revenue in USD")

    class Config:
        strict = True
        name = "RevenueByIndustry"


class DqScorecard(pa.DataFrameModel):
    """gold/dq_scorecard: one row per dataset and run, appended."""

    run_id: T.StringType() = pa.Field(nullable=False, description="Dagster run")
    dataset: T.StringType() = pa.Field(nullable=False, description="Dataset")
    bronze_rows: T.LongType() = pa.Field(nullable=False, ge=0, description="Bronze rows")
    silver_rows: T.LongType() = pa.Field(nullable=False, ge=0, description="Silver rows")
    quarantined_rows: T.LongType() = pa.Field(nullable=False, ge=0, description="Quarantined rows")
    duplicate_rows: T.LongType() = pa.Field(nullable=False, ge=0, description="Exact duplicates")
    superseded_rows: T.LongType() = pa.Field(nullable=False, ge=0, description="Older versions")
    pass_rate: T.DoubleType() = pa.Field(nullable=False, in_range={"min_value": 0, "max_value": 1}, description="silver / (silver + quarantined)")
    checked_at: T.TimestampType() = pa.Field(nullable=False, description="When the scorecard row was written")

    class Config:
        strict = True
        name = "DqScorecard"


class AuditLog(pa.DataFrameModel):
    """gold/audit_log: one row per published table version, append-only (etl_assets/audit.py)."""

    run_id: T.StringType() = pa.Field(nullable=False, description="Dagster run that published the version")
    job: T.StringType() = pa.Field(nullable=True, description="Job of that run")
    asset: T.StringType() = pa.Field(nullable=False, str_matches=r"^(bronze|silver|quarantine|gold)/[a-z0-9_]+$",
                                     description="Published table, layer/table (its asset key)")
    rows: T.LongType() = pa.Field(nullable=False, ge=0, description="Rows of the published version")
    launched_by: T.StringType() = pa.Field(nullable=False, description="dagster/user or launched_by tag, "
                                           "sensor:<name>, schedule:<name>, backfill:<id>, automation, else manual")
    code_version: T.StringType() = pa.Field(nullable=False, description="Git commit (ETL_CODE_VERSION or git rev-parse HEAD), else unknown")
    started_at: T.TimestampType() = pa.Field(nullable=False, description="When the publishing step started (UTC)")
    finished_at: T.TimestampType() = pa.Field(nullable=False, description="When the version was published (UTC)")

    class Config:
        strict = True
        name = "AuditLog"


GOLD_MODELS = {
    "fact_orders": FactOrders,
    "customer_360": Customer360,
    "product_performance_daily": ProductPerformanceDaily,
    "revenue_by_geography": RevenueByGeography,
    "revenue_by_industry": RevenueByIndustry,
    "dq_scorecard": DqScorecard,
    "audit_log": AuditLog,
}

#: primary keys of the published tables
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    **{f"silver/{d.name}": d.key for d in DATASETS},
    "gold/fact_orders": ("order_id",),
    "gold/customer_360": ("customer_id",),
    "gold/product_performance_daily": ("order_date", "product_id"),
    "gold/revenue_by_geography": ("month", "country"),
    "gold/revenue_by_industry": ("month", "industry"),
    "gold/dq_scorecard": ("run_id", "dataset"),
}

TABLE_SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    **{f"bronze/{d.name}": bronze_model(d) for d in DATASETS},
    **{f"silver/{d.name}": silver_model(d) for d in DATASETS},
    **{f"quarantine/{d.name}": quarantine_model(d) for d in DATASETS},
    **{f"gold/{n}": m for n, m in GOLD_MODELS.items()},
}


def spark_schema(table: str) -> T.StructType:
    """The Spark schema a table's model declares."""
    schema = TABLE_SCHEMAS[table].to_schema()
    return T.StructType(
        [T.StructField(name, col.dtype.type, bool(col.nullable)) for name, col in schema.columns.items()]
    )


def bronze_read_schema(ds: Dataset) -> T.StructType:
    """Read schema of raw text files: the contract's source columns as strings + corrupt record."""
    full = spark_schema(f"bronze/{ds.name}")
    keep = set(ds.source_columns) | {CORRUPT_COLUMN}
    return T.StructType([f for f in full.fields if f.name in keep])


def _constraint_text(check) -> str:
    stats = check.statistics or {}
    name = check.name
    if name == "isin":
        return "in {" + ", ".join(map(str, stats.get("allowed_values", []))) + "}"
    if name == "str_matches":
        return f"matches {stats.get('pattern')}"
    if name == "in_range":
        return f"between {stats.get('min_value')} and {stats.get('max_value')}"
    symbols = {"greater_than_or_equal_to": ">=", "greater_than": ">", "less_than_or_equal_to": "<=",
               "less_than": "<", "equal_to": "=="}
    if name in symbols:
        value = next(iter(stats.values()), None)
        return f"{symbols[name]} {value}"
    return name


def column_schema(table: str) -> TableSchema:
    """The ``dagster/column_schema`` of a table, from its model."""
    schema = TABLE_SCHEMAS[table].to_schema()
    key = set(PRIMARY_KEYS.get(table, ()))
    cols = []
    for name, col in schema.columns.items():
        other = [_constraint_text(c) for c in col.checks]
        if name in key:
            other.insert(0, "primary key" if len(key) == 1 else "part of the primary key")
        cols.append(
            TableColumn(
                name=name,
                type=col.dtype.type.simpleString(),
                description=col.description,
                constraints=TableColumnConstraints(nullable=bool(col.nullable), unique=(key == {name}), other=other),
            )
        )
    return TableSchema(columns=cols)
