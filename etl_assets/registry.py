"""The one registry of the nine source datasets.

Everything per dataset -- landing path, file format, columns and their types, key, version
column, required columns, normalisation, PII handling, references -- is declared here once.
Bronze, silver and quarantine assets, their checks, the read schema of raw files and the data
dictionary are all generated from these declarations (see ``etl_assets/assets/factory.py``).

Column types (how a raw string is parsed in silver):

- ``string``     trimmed, empty -> null
- ``money``      decimal(18,2), rounded half-up
- ``rate``       decimal(18,8)
- ``integer``    int
- ``date``       ``YYYY-MM-DD``
- ``timestamp``  ISO-8601 ``YYYY-MM-DDTHH:MM:SS[.f]`` with ``Z``/``±HH:MM``, or
  ``YYYY-MM-DD HH:MM:SS`` meaning UTC; a date alone is not a timestamp (``invalid_<col>``).
  Columns ending in ``_ts``/``_at`` and the CRM's ``created_date``/``last_modified_date``
  (CRM exports write full timestamps there) are timestamps.
- ``boolean``    true/false (Spark's boolean cast vocabulary)
- ``json``       kept as text when it is valid JSON, else null (counted, not quarantined)
"""

from __future__ import annotations

from dataclasses import dataclass, field

ORDER_STATUSES = ("PLACED", "PAID", "SHIPPED", "DELIVERED", "CANCELLED", "RETURNED")
EVENT_NAMES = (
    "page_view",
    "product_view",
    "add_to_cart",
    "checkout",
    "purchase",
    "search",
    "login",
    "logout",
)
INDUSTRIES = (
    "Technology",
    "Finance",
    "Healthcare",
    "Retail",
    "Manufacturing",
    "Education",
    "Energy",
    "Media",
    "Telecom",
    "Hospitality",
)
STAGES = ("Prospecting", "Qualification", "Proposal", "Negotiation", "Closed Won", "Closed Lost")
CLOSED_STAGES = ("Closed Won", "Closed Lost")
EMAIL_REGEX = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

LINEAGE_COLUMNS = ("_source_file", "_dt", "_ingested_at", "_run_id")
CORRUPT_COLUMN = "_corrupt_record"


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    description: str = ""
    #: ``upper`` / ``lower`` / ``email`` normalisation after trimming
    norm: str | None = None
    #: ``email``: replaced by ``<prefix>_hash``/``_enc``/``_domain``; ``drop``: names, phones
    pii: str | None = None


@dataclass(frozen=True)
class Reference:
    """A silver reference check: ``column`` must exist in ``target`` silver ``target_column``."""

    column: str
    target: str
    target_column: str
    reason: str


@dataclass(frozen=True)
class Dataset:
    name: str
    system: str
    format: str  # csv | parquet | jsonl
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    version: str | None
    required: tuple[str, ...]
    description: str
    owner: str
    references: tuple[Reference, ...] = ()
    #: the timestamp (or date) column whose UTC date is the as-of date of the FX conversion of
    #: ``amount`` (None: no conversion)
    fx_date_column: str | None = None
    extension: str = field(default="")

    @property
    def ext(self) -> str:
        return self.extension or {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}[self.format]

    @property
    def source_columns(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def landing_prefix(self) -> str:
        return f"{self.system}/{self.name}"

    @property
    def has_pii(self) -> bool:
        return any(c.pii for c in self.columns)

    @property
    def pii_columns(self) -> frozenset[str]:
        """The source columns holding PII (raw in bronze)."""
        return frozenset(c.name for c in self.columns if c.pii)

    @property
    def upstream_silver(self) -> tuple[str, ...]:
        deps = [r.target for r in self.references]
        if self.fx_date_column or any(c.name == "currency" for c in self.columns):
            deps.append("rates")
        return tuple(dict.fromkeys(d for d in deps if d != self.name))


def _c(name: str, type: str = "string", description: str = "", norm=None, pii=None) -> Column:
    return Column(name=name, type=type, description=description, norm=norm, pii=pii)


DATASETS: tuple[Dataset, ...] = (
    Dataset(
        name="accounts",
        system="crm",
        format="csv",
        columns=(
            _c("account_id", description="CRM account identifier"),
            _c("account_name", description="Company name"),
            _c("industry", description="Industry, matched to the industry list (Other / Unknown)"),
            _c("annual_revenue", "money", "Annual revenue of the account, >= 0"),
            _c("billing_city", description="Billing city"),
            _c("billing_country", description="Billing country code, upper-case", norm="upper"),
            _c("primary_email", description="Primary contact email (PII)", norm="email", pii="email"),
            _c("created_date", "timestamp", "Time the account was created, UTC"),
            _c("last_modified_date", "timestamp", "Version: time of the last change, UTC"),
        ),
        key=("account_id",),
        version="last_modified_date",
        required=("account_id", "last_modified_date"),
        description="CRM accounts (companies).",
        owner="team:crm-data",
    ),
    Dataset(
        name="contacts",
        system="crm",
        format="csv",
        columns=(
            _c("contact_id", description="CRM contact identifier"),
            _c("account_id", description="Account of the contact"),
            _c("first_name", description="First name (PII, dropped)", pii="drop"),
            _c("last_name", description="Last name (PII, dropped)", pii="drop"),
            _c("email", description="Email (PII)", norm="email", pii="email"),
            _c("phone", description="Phone (PII, dropped)", pii="drop"),
            _c("lifecycle_stage", description="Lifecycle stage, lower-case", norm="lower"),
            _c("created_at", "timestamp", "Creation time, UTC"),
            _c("last_modified_at", "timestamp", "Version: time of the last change, UTC"),
        ),
        key=("contact_id",),
        version="last_modified_at",
        required=("contact_id", "last_modified_at"),
        description="CRM contacts (people at accounts).",
        owner="team:crm-data",
        references=(Reference("account_id", "accounts", "account_id", "orphan_account"),),
    ),
    Dataset(
        name="opportunities",
        system="crm",
        format="csv",
        columns=(
            _c("opportunity_id", description="CRM opportunity identifier"),
            _c("account_id", description="Account of the opportunity"),
            _c("opportunity_name", description="Opportunity name"),
            _c("stage", description="Sales stage, one of the stages"),
            _c("amount", "money", "Amount in `currency`, >= 0"),
            _c("currency", description="ISO currency code, upper-case, known", norm="upper"),
            _c("close_date", "date", "Expected or actual close date"),
            _c("probability", "integer", "Win probability in percent, 0-100"),
            _c("created_date", "timestamp", "Creation time, UTC; its UTC date is the FX conversion date"),
            _c("last_modified_date", "timestamp", "Version: time of the last change, UTC"),
        ),
        key=("opportunity_id",),
        version="last_modified_date",
        required=(
            "opportunity_id",
            "account_id",
            "amount",
            "currency",
            "stage",
            "created_date",
            "last_modified_date",
        ),
        description="CRM sales opportunities, converted to USD as of the UTC date of their creation.",
        owner="team:crm-data",
        references=(Reference("account_id", "accounts", "account_id", "orphan_account"),),
        fx_date_column="created_date",
    ),
    Dataset(
        name="customers",
        system="warehouse",
        format="csv",
        columns=(
            _c("customer_id", description="Web-shop customer identifier"),
            _c("email", description="Email (PII)", norm="email", pii="email"),
            _c("first_name", description="First name (PII, dropped)", pii="drop"),
            _c("last_name", description="Last name (PII, dropped)", pii="drop"),
            _c("phone", description="Phone (PII, dropped)", pii="drop"),
            _c("country", description="ISO country code, two letters", norm="upper"),
            _c("segment", description="Customer segment, lower-case", norm="lower"),
            _c("signup_date", "date", "Sign-up date"),
            _c("last_modified_ts", "timestamp", "Version: time of the last change, UTC"),
        ),
        key=("customer_id",),
        version="last_modified_ts",
        required=("customer_id", "last_modified_ts"),
        description="Warehouse customers.",
        owner="team:commerce-data",
    ),
    Dataset(
        name="products",
        system="warehouse",
        format="csv",
        columns=(
            _c("product_id", description="Product identifier"),
            _c("sku", description="Stock keeping unit"),
            _c("product_name", description="Product name"),
            _c("category", description="Product category"),
            _c("unit_price", "money", "List price in `currency`, >= 0"),
            _c("currency", description="ISO currency code, upper-case, known", norm="upper"),
            _c("is_active", "boolean", "Whether the product is sold"),
            _c("last_modified_ts", "timestamp", "Version: time of the last change, UTC"),
        ),
        key=("product_id",),
        version="last_modified_ts",
        required=("product_id", "unit_price", "currency", "last_modified_ts"),
        description="Warehouse product catalogue.",
        owner="team:commerce-data",
    ),
    Dataset(
        name="orders",
        system="warehouse",
        format="parquet",
        columns=(
            _c("order_id", description="Order identifier"),
            _c("customer_id", description="Customer who placed the order"),
            _c("product_id", description="Ordered product"),
            _c("order_ts", "timestamp", "Order time, UTC; the FX conversion date"),
            _c("quantity", "integer", "Units ordered, >= 1"),
            _c("unit_price", "money", "Unit price in `currency`"),
            _c("amount", "money", "Order amount in `currency`, >= 0"),
            _c("currency", description="ISO currency code, upper-case, known", norm="upper"),
            _c("status", description="Order status, one of the order statuses", norm="upper"),
            _c("last_modified_ts", "timestamp", "Version: time of the last change, UTC"),
        ),
        key=("order_id",),
        version="last_modified_ts",
        required=(
            "order_id",
            "customer_id",
            "product_id",
            "order_ts",
            "quantity",
            "amount",
            "currency",
            "status",
            "last_modified_ts",
        ),
        description="Warehouse orders, converted to USD as of the order date.",
        owner="team:commerce-data",
        references=(
            Reference("customer_id", "customers", "customer_id", "orphan_customer"),
            Reference("product_id", "products", "product_id", "orphan_product"),
        ),
        fx_date_column="order_ts",
    ),
    Dataset(
        name="behavior",
        system="web",
        format="jsonl",
        columns=(
            _c("event_id", description="Event identifier"),
            _c("customer_id", description="Customer, null when anonymous"),
            _c("event_name", description="Event name, one of the event names", norm="lower"),
            _c("event_ts", "timestamp", "Event time, UTC"),
            _c("session_id", description="Web session"),
            _c("device", description="Device class, lower-case", norm="lower"),
            _c("geo", description="Country code of the visitor, upper-case", norm="upper"),
            _c("url_1", description="First URL"),
            _c("url_2", description="Second URL"),
            _c("metadata", "json", "Event metadata as JSON text; invalid JSON becomes null"),
        ),
        key=("event_id",),
        version=None,
        required=("event_id", "event_name", "event_ts"),
        description="Web behaviour events (clickstream).",
        owner="team:web-analytics",
        references=(Reference("customer_id", "customers", "customer_id", "orphan_customer"),),
    ),
    Dataset(
        name="order_events",
        system="stream",
        format="jsonl",
        columns=(
            _c("event_id", description="Event identifier"),
            _c("order_id", description="Order the event belongs to"),
            _c("customer_id", description="Customer of the order"),
            _c("event_type", description="Order status reached, one of the order statuses", norm="upper"),
            _c("event_ts", "timestamp", "Event time, UTC"),
            _c("payload", description="Raw event payload (JSON text)"),
        ),
        key=("event_id",),
        version=None,
        required=("event_id", "order_id", "event_type", "event_ts"),
        description="Order lifecycle events from the order stream dump.",
        owner="team:commerce-data",
        references=(Reference("order_id", "orders", "order_id", "orphan_order"),),
    ),
    Dataset(
        name="rates",
        system="fx",
        format="csv",
        columns=(
            _c("rate_date", "date", "Date the rate applies to"),
            _c("base_ccy", description="Base currency, always USD", norm="upper"),
            _c("quote_ccy", description="Quote currency, three letters", norm="upper"),
            _c("rate", "rate", "Units of quote_ccy per 1 base_ccy, > 0"),
            _c("source", description="Rate provider"),
            _c("as_of_ts", "timestamp", "Version: time the rate was published, UTC"),
        ),
        key=("rate_date", "quote_ccy"),
        version="as_of_ts",
        required=("rate_date", "base_ccy", "quote_ccy", "rate", "as_of_ts"),
        description="Daily FX rates against USD.",
        owner="team:finance-data",
    ),
)

DATASETS_BY_NAME: dict[str, Dataset] = {d.name: d for d in DATASETS}

GOLD_TABLES = (
    "fact_orders",
    "customer_360",
    "product_performance_daily",
    "revenue_by_geography",
    "revenue_by_industry",
)


def dataset(name: str) -> Dataset:
    try:
        return DATASETS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS_BY_NAME)}") from None


def silver_build_order() -> list[Dataset]:
    """Datasets in an order where every dataset comes after the silver tables it references."""
    done: list[str] = []
    pending = list(DATASETS)
    while pending:
        for ds in pending:
            if all(dep in done for dep in ds.upstream_silver):
                done.append(ds.name)
                pending.remove(ds)
                break
        else:  # pragma: no cover - a cycle in the registry
            raise ValueError(f"reference cycle among {[d.name for d in pending]}")
    return [DATASETS_BY_NAME[n] for n in done]
