"""Deterministic sample landing-zone generator for the ETL platform.

Writes the nine datasets of CONTRACT.md section 2 under

    <out>/<system>/<dataset>/dt=YYYY-MM-DD/<file>

(``part-0001.csv``, ``part-0002.csv`` ... on days split into several files, plus
re-delivered copies named ``part-0001-redelivery.csv`` in the same folder and
``redelivery-YYYYMMDD-part-0001.csv`` in a later folder).

Usage::

    python -m etl_assets.sample_data --out DIR --days 7 --seed 42 --scale 1.0 [--start-date 2026-11-01]
    python etl_assets/sample_data.py --out DIR ...          # also works as a plain script

or from Python ``generate(out_dir, days=7, seed=42, scale=1.0, start_date=None) -> dict``,
which returns ``{dataset: records written}`` keyed by the dataset folder names (accounts,
contacts, opportunities, customers, products, orders, behavior, order_events, rates). The
count is every record in every file -- anomalies, exact duplicates, malformed lines and
re-delivered copies included -- i.e. the number of rows bronze must hold (a CSV record with
an embedded newline in a quoted field counts once: read CSV with a multi-line aware parser).

Existing files under ``out`` are overwritten, not deleted: use a fresh folder per run.

The data never contains two different rows with the same key, the same version value and the
same ``dt`` (that would make versioning ambiguous); ties are always across different ``dt``s,
and a re-delivered copy of a tied (or re-sent event) row always lands before the tie row's
``dt``, so the result does not depend on which copy of an exact duplicate is kept.
The anomaly catalogue with its rates is the block of ``RATE_*`` constants below.

Volumes: ``BASE_VOLUMES`` are records for a 7-day window at scale 1 (about 330K records);
each dataset gets ``max(1, round(base * scale * days / 7))`` records (plus the anomaly
extras: duplicates, malformed lines, re-deliveries). FX rates do not scale: they are
``FX_HISTORY_DAYS`` days of history per quote currency in the first day's file, then one
row per currency per later day (plus a few corrections).

Determinism: every random choice comes from ``random.Random`` instances seeded with a
string built from the seed and a stream name (string seeds are hashed with SHA-512 by
``random``, independent of PYTHONHASHSEED); no set is ever iterated, file names are fixed
and the default start date is ``DEFAULT_START_DATE`` (never "today"). Two runs with the
same arguments produce byte-identical files (Parquet too, for a given pyarrow version).

Only the standard library and pyarrow are used.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import shutil
import sys
import time
import unicodedata
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

# --------------------------------------------------------------------------------------
# Window and volumes
# --------------------------------------------------------------------------------------
DEFAULT_START_DATE = date(2026, 11, 1)
DEFAULT_DAYS = 7
DEFAULT_SEED = 42
DEFAULT_SCALE = 1.0

#: records per dataset for 7 days at scale 1 (fx rates: see FX_* below, not scaled)
BASE_VOLUMES = {
    "accounts": 10_000,
    "contacts": 25_000,
    "opportunities": 30_000,
    "customers": 50_000,
    "products": 10_000,
    "orders": 100_000,
    "behavior": 50_000,
    "order_events": 50_000,
}
BASE_DAYS = 7
#: master data gets a bigger first day (initial load), so day-0 facts have references
FIRST_DAY_BOOST = 1.6
#: at least this share of a day's quota is new entities, whatever the scheduled updates
MIN_NEW_SHARE = 0.3

# --------------------------------------------------------------------------------------
# Anomaly catalogue.  Every rate is a probability per row (or per file where stated),
# drawn from the seeded generator, so the same seed gives the same anomalies.
# Rates are small so that most data reaches silver/gold.  At scale 1 every anomaly
# occurs at least a few times per dataset it applies to; file-level anomalies
# (re-delivery, BOM, unbalanced quote, schema drift) are forced at least once per
# dataset whatever the scale.
# --------------------------------------------------------------------------------------
# -- delivery / file level ------------------------------------------------------------
RATE_MULTI_PART_DAY = 0.35        # per dataset-day: the day is split into 2-3 files (part-000N; the later parts small)
RATE_REDELIVER_SAME_DT = 0.06     # per file: byte-identical copy "<name>-redelivery.<ext>" in the same dt folder (>=1 forced)
RATE_REDELIVER_LATER_DT = 0.06    # per file: byte-identical copy "redelivery-<YYYYMMDD>-<name>" in a later dt folder (>=1 forced if days>1)
REDELIVERY_MAX_SHARE = 0.03       # re-delivered records are capped at 3% of a dataset's records (the forced ones excepted)
RATE_BOM_FILE = 0.15              # per CSV file: UTF-8 BOM at the start (the first crm/accounts file always has one)
RATE_UNBALANCED_QUOTE_FILE = 0.10 # per CSV file: last line has an opening quote that is never closed (>=1 forced per CSV dataset).
                                  # Always the LAST line, so a multi-line-aware parser cannot swallow valid records.
SCHEMA_DRIFT = True               # one customers file gets an extra trailing column "loyalty_tier";
                                  # one products file lacks the "is_active" column; a few behavior lines carry an extra key
RATE_EXTRA_JSON_KEY = 0.01        # behavior: extra key "experiment" on the line (extra column, ignored)
RATE_OMIT_NULL_KEY = 0.3          # JSON Lines: a null value is written by omitting the key instead of "key": null

# -- row level: duplicates and versions ------------------------------------------------
RATE_EXACT_DUPLICATE = 0.005      # a row is written twice (identical bytes) in the same file
UPDATE_RATE = {                   # per created entity: a newer version (later version column) on a later day
    "accounts": 0.15, "contacts": 0.12, "opportunities": 0.25, "customers": 0.10, "products": 0.15,
}
RATE_ORDER_STATUS_UPDATE = 0.12   # orders: per status change that falls on a later day, a new order version is delivered
RATE_REPEAT_UPDATE = 0.25         # after an update, another update on a still later day
RATE_STALE_VERSION = 0.01         # per created entity: on a later day, a version OLDER than the original (must be superseded)
RATE_VERSION_TIE = 0.005          # per created entity: on a later day, same version value (same instant, sometimes written in
                                  # another time zone) with different content -> tie, the later _dt wins
RATE_EVENT_KEY_REUSE = 0.002      # behavior/order_events (no version column): an event_id re-sent on a later day with
                                  # different content -> the earliest _dt wins

# -- row level: nulls, blanks, padding -------------------------------------------------
RATE_NULL_KEY = 0.002             # key column empty, whitespace-only or JSON null
RATE_NULL_REQUIRED = 0.003        # one required (non-key) column empty / null
RATE_EMPTY_OR_PADDED = 0.02       # one optional text column empty, whitespace-only or whitespace-padded
RATE_PADDED_ID = 0.005            # a key or reference id padded with spaces (" CUS-0000012 ") -> valid after trim

# -- row level: unparsable values ---------------------------------------------------------
RATE_BAD_TIMESTAMP = 0.002        # one date/timestamp column unparsable ("not-a-date", "2026-13-45", "31/12/2026", ...)
RATE_BAD_NUMBER = 0.001           # one numeric column unparsable ("n/a", "12.3.4", "1,234.50", ...)
RATE_MALFORMED_LINE = 0.001       # per row: an extra malformed line is inserted before it (CSV: wrong number of
                                  # fields; JSON Lines: truncated JSON or not JSON at all)

# -- row level: rule violations ----------------------------------------------------------
RATE_INVALID_VALUE = 0.003        # per applicable rule: negative amount/unit_price/annual_revenue, quantity 0 or
                                  # negative, probability 150, invalid stage/status/event name/event type/country,
                                  # fx rate <= 0, base_ccy not USD, invalid quote_ccy, is_active "maybe"
RATE_UNKNOWN_CURRENCY = 0.002     # currency not in fx rates ("XYZ", "ABC", "US$", "EURO")
RATE_FUTURE_ORDER = 0.002         # orders: order_ts 2-5 days after the file's dt (10% exactly at dt+2 00:00:00Z)
RATE_NEAR_FUTURE_ORDER = 0.001    # orders: order_ts on dt+1 (allowed, not future: boundary test)
RATE_ORPHAN = 0.003               # reference to an id that does not exist (account, customer, product, order)
RATE_OPP_BEFORE_FX_HISTORY = 0.003  # non-USD opportunity created before the FX history starts -> missing_fx_rate

# -- row level: codes, emails, JSON -------------------------------------------------------
RATE_MIXED_CASE_CODE = 0.03       # a code column in mixed case / padded ("usd ", " Eur", "gb", "Page_View", " Mobile")
RATE_INDUSTRY_OTHER = 0.03        # accounts: industry outside the vocabulary ("Aerospace") -> Other
RATE_INDUSTRY_NULL = 0.03         # accounts: industry empty -> Unknown
RATE_INVALID_EMAIL = 0.01         # email not valid ("not-an-email", "john.doe@", "a@@b.com", "x y@z.com") -> null in silver
RATE_MESSY_EMAIL = 0.03           # valid email in mixed case with surrounding spaces ("  John.Doe@Example.COM ")
RATE_METADATA_AS_STRING = 0.10    # behavior: metadata is a JSON string holding a JSON object
RATE_BAD_METADATA_JSON = 0.01     # behavior: metadata is a string that is not valid JSON -> null in silver
RATE_EMBEDDED_NEWLINE = 0.0003    # accounts: account_name holds a newline inside a quoted field (valid RFC 4180)
RATE_EVENT_TS_TIE = 0.003         # order_events: a second, different event of the same order at the identical
                                  # event_ts (final_status tie broken by rank)

# -- relationships -------------------------------------------------------------------------
RATE_ANONYMOUS = 0.20             # behavior: customer_id null
RATE_CUSTOMER_MATCHES_ACCOUNT = 0.12  # customers: email equal to a CRM account's primary_email (gold CRM match)
RATE_ACCOUNT_SHARED_EMAIL = 0.01  # accounts: primary_email shared with an earlier account (customer matches several)
RATE_MATCH_SHARED = 0.03          # of the matching customers, the share that use a shared (multi-account) email
P_ORDER_HAS_EVENTS = 0.172        # orders whose lifecycle is streamed to order_events (tuned to ~50K events)
RATE_EVENT_NULL_CUSTOMER = 0.03   # order_events: customer_id null (optional column)

# -- timestamp text formats ------------------------------------------------------------
# weights of: "YYYY-MM-DDTHH:MM:SSZ", with ".mmmZ", "YYYY-MM-DD HH:MM:SS" (UTC), "±HH:MM" offset
TS_FORMAT_WEIGHTS = (0.55, 0.20, 0.10, 0.15)
#: CRM exports (accounts/opportunities created_date, last_modified_date): full timestamps, mostly
#: "...Z" as the CRM writes them ("2026-03-28T08:00:00Z"), some re-saved by a spreadsheet in the
#: space form (UTC), a few with milliseconds or a local offset
CRM_TS_FORMAT_WEIGHTS = (0.65, 0.05, 0.25, 0.05)
RATE_CRM_DATE_ONLY = 0.002        # accounts/opportunities: created_date or last_modified_date written as a date
                                  # alone ("2026-11-03", an old export) -> not a timestamp: invalid_<col>
TS_OFFSETS_MIN = (120, 330, -480, 60, -300, 540, -180)

# -- FX -------------------------------------------------------------------------------------
FX_HISTORY_DAYS = 730             # days of history (ending on the start date) in the first day's file
FX_BASE_RATES = {                 # units of quote per 1 USD, roughly realistic
    "EUR": 0.92, "GBP": 0.79, "JPY": 149.5, "CAD": 1.36, "AUD": 1.53,
    "CHF": 0.88, "CNY": 7.21, "INR": 83.3, "BRL": 5.05, "MXN": 17.2,
}
#: a currency that IS in fx rates but whose history only starts on day LATE_FX_START_DAY:
#: its orders/opportunities dated earlier find no as-of rate -> missing_fx_rate
LATE_FX_CURRENCY = "SEK"
LATE_FX_BASE_RATE = 10.6
LATE_FX_START_DAY = 3
RATE_FX_GAP = 0.02                # a (date, currency) of history is missing (as-of lookup uses an earlier date)
FX_CORRECTIONS_PER_DAY = 3        # later days: corrections of recent rates (newer as_of_ts)
FX_STALE_PER_DAY = 1              # later days: a row older than the delivered version (superseded)
FX_TIES_PER_DAY = 1               # later days: same as_of_ts, different rate (tie, later _dt wins)

ORDER_CURRENCY_WEIGHTS = (
    ("USD", 0.62), ("EUR", 0.10), ("GBP", 0.07), ("CAD", 0.04), ("AUD", 0.03), ("JPY", 0.03),
    ("CHF", 0.02), ("CNY", 0.02), ("INR", 0.02), ("BRL", 0.02), ("MXN", 0.02), (LATE_FX_CURRENCY, 0.01),
)
OPP_CURRENCY_WEIGHTS = (
    ("USD", 0.70), ("EUR", 0.10), ("GBP", 0.07), ("CAD", 0.03), ("AUD", 0.02), ("JPY", 0.02),
    ("CHF", 0.02), ("INR", 0.01), ("BRL", 0.01), (LATE_FX_CURRENCY, 0.02),
)
PRODUCT_CURRENCY_WEIGHTS = (("USD", 0.85), ("EUR", 0.08), ("GBP", 0.05), ("CAD", 0.02))

# --------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------
ORDER_STATUSES = ("PLACED", "PAID", "SHIPPED", "DELIVERED", "CANCELLED", "RETURNED")
EVENT_NAMES = ("page_view", "product_view", "add_to_cart", "checkout", "purchase", "search", "login", "logout")
INDUSTRIES = ("Technology", "Finance", "Healthcare", "Retail", "Manufacturing", "Education", "Energy",
              "Media", "Telecom", "Hospitality")
STAGES = ("Prospecting", "Qualification", "Proposal", "Negotiation", "Closed Won", "Closed Lost")
STAGE_PROBABILITY = {"Prospecting": 10, "Qualification": 20, "Proposal": 50, "Negotiation": 75,
                     "Closed Won": 100, "Closed Lost": 0}

INVALID_STATUSES = ("PENDING", "SHIPPD", "ON_HOLD", "UNKNOWN")
INVALID_EVENT_TYPES = ("SHIP", "REFUNDED", "PACKED", "unknown")
INVALID_EVENT_NAMES = ("page-view", "clickk", "scroll", "unknown_event", "PageView")
INVALID_STAGES = ("Won", "Closed-Won", "Discovery", "Stage 7")
INVALID_COUNTRIES = ("USA", "1X", "U", "United States", "D3")
UNKNOWN_CURRENCIES = ("XYZ", "ABC", "US$", "EURO")
INVALID_QUOTE_CCY = ("E1R", "EURO", "US", "12$")
INVALID_BASE_CCY = ("EUR", "GBP", "XXX")
OTHER_INDUSTRIES = ("Aerospace", "Agriculture", "Government", "Non-Profit", "Biotech")
BAD_DATES = ("not-a-date", "2026-13-45", "31/12/2026", "2026-02-30", "N/A")
BAD_TIMESTAMPS = ("not-a-timestamp", "2026-13-45T25:61:00Z", "31/12/2026 10:00:00", "2026-11-31T10:00:00Z",
                  "yesterday")
BAD_NUMBERS = ("n/a", "12.3.4", "1,234.50", "abc", "--5")
INVALID_EMAILS = ("not-an-email", "john.doe@", "a@@b.com", "x y@z.com", "@example.com", "jane@example")
NULL_LIKE = ("", "   ", None)

FIRST_NAMES = ("James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William",
               "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
               "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty", "Mark", "Sandra",
               "Priya", "Wei", "Yuki", "Ahmed", "Fatima", "Olga", "Lars", "Chloé", "José", "Zoë", "Björn",
               "Siobhán", "Łukasz", "Ngozi", "Mateo", "Aarav", "Sofía", "Hiroshi", "Ingrid", "Kwame", "Elif",
               "Dmitri")
LAST_NAMES = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
              "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
              "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "O'Brien", "Müller", "Nguyen",
              "Kim", "Patel", "Singh", "Chen", "Wang", "Sato", "Suzuki", "Rossi", "Dubois", "Schmidt",
              "Kowalski", "Novák", "Johansson", "Okafor", "Silva", "Santos", "Ivanov", "Yılmaz", "Van der Berg",
              "D'Angelo", "Smith-Jones", "García Márquez")
COUNTRY_CITIES = (
    ("US", 0.40, ("New York", "San Francisco", "Chicago", "Austin", "Seattle", "Boston", "Denver")),
    ("GB", 0.10, ("London", "Manchester", "Edinburgh")),
    ("DE", 0.08, ("Berlin", "München", "Hamburg")),
    ("FR", 0.06, ("Paris", "Lyon")),
    ("CA", 0.06, ("Toronto", "Vancouver", "Montréal")),
    ("AU", 0.04, ("Sydney", "Melbourne")),
    ("IN", 0.05, ("Bengaluru", "Mumbai")),
    ("JP", 0.04, ("Tokyo", "Osaka")),
    ("BR", 0.04, ("São Paulo", "Rio de Janeiro")),
    ("MX", 0.03, ("Mexico City", "Guadalajara")),
    ("ES", 0.03, ("Madrid", "Barcelona")),
    ("NL", 0.03, ("Amsterdam", "Rotterdam")),
    ("SE", 0.02, ("Stockholm", "Göteborg")),
    ("CH", 0.01, ("Zürich", "Geneva")),
    ("SG", 0.01, ("Singapore",)),
)
COMPANY_A = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Wonka", "Hooli", "Vandelay", "Soylent",
             "Tyrell", "Cyberdyne", "Aperture", "Massive Dynamic", "Pied Piper", "Dunder Mifflin", "Gekko",
             "Oscorp", "Monarch", "Nakatomi", "Blue Sun", "Virtucon", "Prestige", "Sirius", "Northwind",
             "Contoso", "Fabrikam", "Tailspin", "Litware", "Adventure Works", "Wingtip", "Proseware", "Alpine",
             "Coho", "Lucerne", "Fourth Coffee", "Trey", "Woodgrove", "Zenith", "Orion")
COMPANY_B = ("Inc", "LLC", "Ltd", "GmbH", "Group", "Holdings", "Partners", "Labs", "Systems", "Industries",
             "Solutions", "Technologies", "Corp", "& Co", "S.A.")
ACCOUNT_EMAIL_ROLES = ("info", "billing", "ap", "finance", "accounts", "contact", "procurement", "admin")
FREE_EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me",
                      "web.de", "orange.fr", "example.org")
SEGMENTS = ("consumer", "smb", "mid_market", "enterprise")
LIFECYCLE_STAGES = ("subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist")
DEVICES = ("mobile", "desktop", "tablet")
CATEGORIES = ("Electronics", "Home & Kitchen", "Garden", "Toys", "Sports", "Books", "Beauty", "Grocery",
              "Apparel", "Automotive", "Office")
PRODUCT_ADJ = ("Ergonomic", "Rustic", "Sleek", "Smart", "Compact", "Deluxe", "Eco", "Ultra", "Classic", "Portable")
PRODUCT_MAT = ("Steel", "Wooden", "Cotton", "Plastic", "Granite", "Leather", "Bamboo", "Glass", "Rubber", "Wool")
PRODUCT_NOUN = ("Chair", "Lamp", "Keyboard", "Backpack", "Bottle", "Speaker", "Jacket", "Kettle", "Mouse",
                "Table", "Shoes", "Watch", "Blender", "Notebook", "Headphones")
OPP_THEMES = ("Platform Expansion", "Renewal", "New Logo", "Upsell", "Pilot", "Migration", "Enterprise License",
              "Support Upgrade", "Analytics Add-on", "Multi-year Deal")
SEARCH_TERMS = ("red shoes", "wireless mouse", "coffee", "desk lamp", "yoga mat", "usb-c cable", "jacket",
                "gift ideas", "kettle", "headphones")
REFERRERS = ("https://www.google.com/", "https://www.bing.com/", "https://t.co/x1y2z3", "https://news.example.net/",
             None, None)
SHOP = "https://shop.example.com"

# --------------------------------------------------------------------------------------
# Dataset registry: name -> (system, folder, format, columns)
# --------------------------------------------------------------------------------------
ACCOUNT_COLS = ("account_id", "account_name", "industry", "annual_revenue", "billing_city", "billing_country",
                "primary_email", "created_date", "last_modified_date")
CONTACT_COLS = ("contact_id", "account_id", "first_name", "last_name", "email", "phone", "lifecycle_stage",
                "created_at", "last_modified_at")
OPP_COLS = ("opportunity_id", "account_id", "opportunity_name", "stage", "amount", "currency", "close_date",
            "probability", "created_date", "last_modified_date")
CUSTOMER_COLS = ("customer_id", "email", "first_name", "last_name", "phone", "country", "segment", "signup_date",
                 "last_modified_ts")
PRODUCT_COLS = ("product_id", "sku", "product_name", "category", "unit_price", "currency", "is_active",
                "last_modified_ts")
ORDER_COLS = ("order_id", "customer_id", "product_id", "order_ts", "quantity", "unit_price", "amount", "currency",
              "status", "last_modified_ts")
BEHAVIOR_COLS = ("event_id", "customer_id", "event_name", "event_ts", "session_id", "device", "geo", "url_1",
                 "url_2", "metadata")
ORDER_EVENT_COLS = ("event_id", "order_id", "customer_id", "event_type", "event_ts", "payload")
FX_COLS = ("rate_date", "base_ccy", "quote_ccy", "rate", "source", "as_of_ts")

DATASETS = {
    "accounts": ("crm", "accounts", "csv", ACCOUNT_COLS),
    "contacts": ("crm", "contacts", "csv", CONTACT_COLS),
    "opportunities": ("crm", "opportunities", "csv", OPP_COLS),
    "customers": ("warehouse", "customers", "csv", CUSTOMER_COLS),
    "products": ("warehouse", "products", "csv", PRODUCT_COLS),
    "orders": ("warehouse", "orders", "parquet", ORDER_COLS),
    "behavior": ("web", "behavior", "jsonl", BEHAVIOR_COLS),
    "order_events": ("stream", "order_events", "jsonl", ORDER_EVENT_COLS),
    "rates": ("fx", "rates", "csv", FX_COLS),
}

DAY_SECONDS = 86_400
US = 1_000_000
BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------
def _weighted(rng: random.Random, pairs):
    """Pick from ((value, weight), ...) -- weights need not sum to 1."""
    total = 0.0
    for _, w in pairs:
        total += w
    x = rng.random() * total
    for v, w in pairs:
        x -= w
        if x < 0:
            return v
    return pairs[-1][0]


def _fmt_ts(rng: random.Random, sec: int, ms: int = 0, kind: int | None = None,
            weights: tuple = TS_FORMAT_WEIGHTS) -> str:
    """Render an epoch second (+ms) as one of the contract's timestamp text formats."""
    if kind is None:
        r = rng.random()
        w0, w1, w2, _ = weights
        kind = 0 if r < w0 else 1 if r < w0 + w1 else 2 if r < w0 + w1 + w2 else 3
    if kind == 0:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sec))
    if kind == 1:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{ms:03d}Z"
    if kind == 2:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
    off = rng.choice(TS_OFFSETS_MIN)
    sign = "+" if off >= 0 else "-"
    a = abs(off)
    frac = f".{ms:03d}" if (kind == 3 and rng.random() < 0.3) else ""
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec + off * 60))
    return f"{base}{frac}{sign}{a // 60:02d}:{a % 60:02d}"


def _crm_ts(rng: random.Random, sec: int) -> str:
    """A CRM export's timestamp text (see CRM_TS_FORMAT_WEIGHTS)."""
    return _fmt_ts(rng, sec, rng.randrange(1000), weights=CRM_TS_FORMAT_WEIGHTS)


def _crm_date_only(rng: random.Random, row: list, cols: tuple[int, int]) -> None:
    """RATE_CRM_DATE_ONLY: one of the CRM timestamp columns cut to its date (in place)."""
    if rng.random() < RATE_CRM_DATE_ONLY:
        i = rng.choice(cols)
        v = row[i]
        if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] in "T ":
            row[i] = v[:10]


def _epoch(d: date) -> int:
    """Epoch second of 00:00 UTC of a date."""
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


def _same_instant(rng: random.Random, text: str, sec: int) -> str:
    """Another rendering of the instant `text` (which was rendered from `sec`) or the same text."""
    if "." in text or rng.random() < 0.5:
        return text
    return _fmt_ts(rng, sec, 0, kind=4)  # offset form, no fraction: same whole second


def _pad(rng: random.Random, v: str) -> str:
    return rng.choice((f" {v}", f"{v} ", f"  {v}  ", f"\t{v} "))


def _messy_code(rng: random.Random, v: str) -> str:
    v = v.strip()
    c = rng.randrange(6)
    if c == 0:
        return v.lower() + " "
    if c == 1:
        return " " + v.title()
    if c == 2:
        return v.lower()
    if c == 3:
        return v.upper() if v != v.upper() else v.title()
    if c == 4:
        return f"  {v} "
    return " " + v.swapcase()


def _messy_email(rng: random.Random, v: str) -> str:
    local, _, dom = v.partition("@")
    local = ".".join(p[:1].upper() + p[1:] for p in local.split("."))
    dom = dom.upper() if rng.random() < 0.5 else dom.title()
    return rng.choice(("  ", " ", "")) + f"{local}@{dom}" + rng.choice((" ", "  ", ""))


_ASCII_CACHE: dict[str, str] = {}


def _ascii(s: str) -> str:
    r = _ASCII_CACHE.get(s)
    if r is None:
        r = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii").lower()
        r = "".join(ch for ch in r if ch.isalnum())
        _ASCII_CACHE[s] = r
    return r


def _phone(rng: random.Random) -> str:
    c = rng.randrange(5)
    a, b = rng.randrange(200, 999), rng.randrange(10_000)
    if c == 0:
        return f"+1-{a}-555-{b:04d}"
    if c == 1:
        return f"({a}) 555-{b:04d}"
    if c == 2:
        return f"+44 20 7946 {b:04d}"
    if c == 3:
        return f"+49 30 {a}{b:04d}"
    return f"+91 98{a}{b:05d}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _quotas(rng: random.Random, total: int, days: int, first_boost: float = 1.0) -> list[int]:
    w = [rng.uniform(0.85, 1.15) for _ in range(days)]
    w[0] *= first_boost
    s = sum(w)
    q = [int(total * x / s) for x in w]
    q[-1] += total - sum(q)
    return q


def _cents_str(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    c = abs(cents)
    return f"{sign}{c // 100}.{c % 100:02d}"


def _money_str(rng: random.Random, cents: int) -> str:
    """Money as text: mostly 2 decimals, sometimes an integer or 1 decimal when exact."""
    if cents % 100 == 0 and rng.random() < 0.3:
        return str(cents // 100)
    return _cents_str(cents)


class _Spec:
    """Column roles of a text dataset, used by the generic anomaly injector."""

    def __init__(self, cols, key, required=(), text=(), dates=(), timestamps=(), numbers=(), codes=(),
                 emails=(), ids=()):
        idx = {c: i for i, c in enumerate(cols)}
        self.key = [idx[c] for c in key]
        self.required = [idx[c] for c in required if c not in key]
        self.text = [idx[c] for c in text]
        self.temporal = [(idx[c], True) for c in dates] + [(idx[c], False) for c in timestamps]
        self.numbers = [idx[c] for c in numbers]
        self.codes = [idx[c] for c in codes]
        self.emails = [idx[c] for c in emails]
        self.ids = [idx[c] for c in ids]


def _mutate(rng: random.Random, row: list, spec: _Spec) -> None:
    """Generic row anomalies (in place): null keys/required, blanks, padding, bad dates/numbers, messy codes/emails."""
    r = rng.random
    if r() < RATE_NULL_KEY:
        row[rng.choice(spec.key)] = rng.choice(NULL_LIKE)
    if spec.required and r() < RATE_NULL_REQUIRED:
        row[rng.choice(spec.required)] = rng.choice(NULL_LIKE)
    if spec.text and r() < RATE_EMPTY_OR_PADDED:
        i = rng.choice(spec.text)
        v = row[i]
        row[i] = rng.choice(NULL_LIKE) if (not v or r() < 0.4) else _pad(rng, v)
    if spec.ids and r() < RATE_PADDED_ID:
        i = rng.choice(spec.ids)
        if row[i]:
            row[i] = _pad(rng, row[i])
    if spec.temporal and r() < RATE_BAD_TIMESTAMP:
        i, is_date = rng.choice(spec.temporal)
        row[i] = rng.choice(BAD_DATES if is_date else BAD_TIMESTAMPS)
    if spec.numbers and r() < RATE_BAD_NUMBER:
        row[rng.choice(spec.numbers)] = rng.choice(BAD_NUMBERS)
    if spec.codes and r() < RATE_MIXED_CASE_CODE:
        i = rng.choice(spec.codes)
        if row[i]:
            row[i] = _messy_code(rng, row[i])
    for i in spec.emails:
        v = row[i]
        if v:
            x = r()
            if x < RATE_INVALID_EMAIL:
                row[i] = rng.choice(INVALID_EMAILS)
            elif x < RATE_INVALID_EMAIL + RATE_MESSY_EMAIL:
                row[i] = _messy_email(rng, v)


def _plan_fate(rng: random.Random, sched: list, d: int, days: int, st: dict, p_update: float, ties: set) -> None:
    """Decide what happens later to an entity created on day d (update / stale copy / tie copy / nothing)."""
    if d >= days - 1:
        return
    x = rng.random()
    if x < p_update:
        kind = "update"
    elif x < p_update + RATE_STALE_VERSION:
        kind = "stale"
    elif x < p_update + RATE_STALE_VERSION + RATE_VERSION_TIE:
        kind = "tie"
        ties.add(st["id"])
    else:
        return
    sched[rng.randint(d + 1, days - 1)].append((kind, st))


def _maybe_repeat(rng: random.Random, sched: list, d: int, days: int, st: dict) -> None:
    if d < days - 1 and rng.random() < RATE_REPEAT_UPDATE:
        sched[rng.randint(d + 1, days - 1)].append(("update", st))


# --------------------------------------------------------------------------------------
# FX model (shared by products, orders, opportunities and the fx/rates files)
# --------------------------------------------------------------------------------------
class _Fx:
    def __init__(self, rng: random.Random, first: date, last: date):
        self.first = first
        n = (last - first).days + 1
        self.series: dict[str, list[float]] = {}
        bases = dict(FX_BASE_RATES)
        bases[LATE_FX_CURRENCY] = LATE_FX_BASE_RATE
        for ccy, base in bases.items():          # dict order: deterministic
            mu = math.log(base)
            x = mu + rng.gauss(0, 0.03)
            vals = []
            for _ in range(n):
                x += 0.02 * (mu - x) + rng.gauss(0, 0.0045)
                vals.append(math.exp(x))
            self.series[ccy] = vals

    def rate(self, ccy: str, d: date) -> float:
        if ccy == "USD":
            return 1.0
        s = self.series[ccy]
        i = min(max((d - self.first).days, 0), len(s) - 1)
        return s[i]


def _fmt_rate(x: float) -> str:
    return f"{x:.4f}" if x >= 20 else f"{x:.6f}"


def _to_ccy_cents(usd: float, rate: float, ccy: str) -> int:
    v = usd * rate
    if ccy in ("JPY", "INR"):
        return int(round(v)) * 100
    return int(round(v * 100))


# --------------------------------------------------------------------------------------
# File writing (parts, duplicates, malformed lines, BOM, drift, re-delivery)
# --------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, ctx: "_Ctx", name: str):
        self.ctx = ctx
        self.name = name
        system, folder, fmt, cols = DATASETS[name]
        self.base = ctx.out / system / folder
        self.fmt = fmt
        self.cols = cols
        self.rng = ctx.rng(name, "files")
        self.files: list[tuple[int, Path, int, list]] = []   # (day, path, records, tie keys in the file)
        self.total = 0
        self.n_files = 0
        self.unbalanced_done = False
        # keys that get a "tie" row (same version, other content, later day) or, for the event datasets, an
        # event_id re-sent later with other content.  A later-dt re-delivery of a file holding such a key
        # lands strictly before the key's next occurrence, so the outcome never depends on which copy of an
        # exact duplicate is kept; tie_days records the dts where each such key occurs.
        self.ties: set = set()       # membership tests only, never iterated
        self.tie_days: dict = {}

    def key_of(self, rec) -> str | None:
        if self.name == "rates":
            return f"{(rec[0] or '').strip()}|{(rec[2] or '').strip().upper()}"
        k = rec.get("event_id") if isinstance(rec, dict) else rec[0]
        return k.strip() if isinstance(k, str) else k

    # -- public -------------------------------------------------------------------------
    def write_day(self, d: int, records: list, drift=None, force_parts: int | None = None) -> None:
        rng = self.rng
        n = len(records)
        nparts = 1
        if force_parts:
            nparts = force_parts if n >= force_parts else 1
        elif d == 0 and n >= 50:
            nparts = 3          # always small late parts on day 0 (cheap candidates for re-delivery)
        elif n >= 50 and rng.random() < RATE_MULTI_PART_DAY:
            nparts = rng.choice((2, 2, 3))
        folder = self.base / f"dt={self.ctx.dates[d].isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        ext = {"csv": "csv", "parquet": "parquet", "jsonl": "jsonl"}[self.fmt]
        # uneven parts: a big main file and one or two small late files.  Rows of tie keys always go to the
        # main file, so the small files stay free to be re-delivered on any later dt.
        flags = [self.key_of(r) in self.ties for r in records] if self.ties else [False] * n
        others = [r for r, f in zip(records, flags) if not f]
        n_o = len(others)
        shares = [rng.uniform(0.03, 0.15) for _ in range(nparts - 1)]
        bounds = [0]
        acc = 1.0 - sum(shares)
        bounds.append(round(n_o * acc))
        for sh in shares:
            acc += sh
            bounds.append(round(n_o * acc))
        bounds[-1] = n_o
        parts, j = [[]], 0
        for r, f in zip(records, flags):
            if f:
                parts[0].append(r)
            else:
                if j < bounds[1]:
                    parts[0].append(r)
                j += 1
        parts += [others[bounds[p]:bounds[p + 1]] for p in range(1, nparts)]
        last_day = d == self.ctx.days - 1
        for p in range(nparts):
            part = parts[p]
            header = list(self.cols)
            if p == 0 and drift is not None:
                header, part = self._apply_drift(header, part, drift)
            part = self._with_duplicates(part)
            tie_keys = []
            if self.ties:
                for rec in part:
                    k = self.key_of(rec)
                    if k in self.ties:
                        tie_keys.append(k)
                        self.tie_days.setdefault(k, []).append(d)
            path = folder / f"part-{p + 1:04d}.{ext}"
            if self.fmt == "csv":
                force_unbalanced = last_day and p == nparts - 1 and not self.unbalanced_done
                nrec = self._write_csv(path, header, part, force_unbalanced)
            elif self.fmt == "jsonl":
                nrec = self._write_jsonl(path, part)
            else:
                nrec = self._write_parquet(path, part)
            self.files.append((d, path, nrec, tie_keys))
            self.total += nrec
            self.n_files += 1

    def finish(self) -> int:
        """Re-deliver some files byte for byte (same dt and later dt)."""
        rng, days = self.rng, self.ctx.days
        originals = list(self.files)
        if self.name == "rates" and len(originals) > 1:
            originals = [f for f in originals if f[0] > 0]   # never re-deliver the 2-year history file
        budget = REDELIVERY_MAX_SHARE * self.total
        used = 0
        same, later = [], []
        for f in originals:
            if rng.random() < RATE_REDELIVER_SAME_DT and used + f[2] <= budget:
                same.append(f)
                used += f[2]
            if f[0] < days - 1 and rng.random() < RATE_REDELIVER_LATER_DT and used + f[2] <= budget:
                later.append(f)
                used += f[2]
        # at least one of each kind: the smallest eligible file (ties: the earliest)
        if not same and originals:
            same = [min(originals, key=lambda f: f[2])]
        for d, path, nrec, _ in same:
            dst = path.with_name(f"{path.stem}-redelivery{path.suffix}")
            shutil.copyfile(path, dst)
            self.total += nrec
            self.n_files += 1
        cands = sorted((f for f in originals if f[0] < days - 1 and f not in same), key=lambda f: f[2])
        cands += sorted((f for f in originals if f[0] < days - 1 and f in same), key=lambda f: f[2])
        for f in later + ([] if later else cands):
            d, path, nrec, tie_keys = f
            # a copy of a tie key's row must land before the key's next occurrence: exact-duplicate removal
            # may keep either copy, and a copy after the tie row would change which row wins the tie
            limit = min(days - 1, d + 3)
            for k in tie_keys:
                nxt = [x for x in self.tie_days.get(k, ()) if x > d]
                if nxt:
                    limit = min(limit, min(nxt) - 1)
            targets = list(range(d + 1, limit + 1))
            if not targets:
                continue
            d2 = rng.choice(targets)
            for k in tie_keys:
                self.tie_days[k].append(d2)
            folder = self.base / f"dt={self.ctx.dates[d2].isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            dst = folder / f"redelivery-{self.ctx.dates[d].strftime('%Y%m%d')}-{path.name}"
            shutil.copyfile(path, dst)
            self.total += nrec
            self.n_files += 1
            if not later:
                break                   # forced: one is enough
        return self.total

    # -- internals ------------------------------------------------------------------------
    def _apply_drift(self, header: list, rows: list, drift):
        kind, col, values = drift
        if kind == "add":      # value derived from the row, so exact duplicates stay exact
            return header + [col], [list(r) + [values[sum(map(ord, str(r[0]))) % len(values)]] for r in rows]
        j = header.index(col)  # drop
        return header[:j] + header[j + 1:], [r[:j] + r[j + 1:] for r in rows]

    def _with_duplicates(self, rows: list) -> list:
        rng = self.rng
        out = list(rows)
        n = len(rows)
        if n == 0:
            return out
        k = sum(1 for _ in range(n) if rng.random() < RATE_EXACT_DUPLICATE)
        for _ in range(k):
            src = rows[rng.randrange(n)]
            dup = list(src) if isinstance(src, list) else (dict(src) if isinstance(src, dict) else src)
            out.insert(rng.randrange(len(out) + 1), dup)
        return out

    def _write_csv(self, path: Path, header: list, rows: list, force_unbalanced: bool) -> int:
        rng = self.rng
        buf = io.StringIO()
        w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(header)
        nrec = 0
        for row in rows:
            if rng.random() < RATE_MALFORMED_LINE:
                buf.write(self._bad_csv_line(row))
                nrec += 1
            w.writerow(row)
            nrec += 1
        if rows and (force_unbalanced or rng.random() < RATE_UNBALANCED_QUOTE_FILE):
            src = [("" if v is None else str(v)).replace('"', "").replace("\n", " ") for v in rng.choice(rows)]
            j = min(1, len(src) - 1)
            src[j] = '"' + src[j]
            buf.write(",".join(src) + "\n")
            nrec += 1
            self.unbalanced_done = True
        data = buf.getvalue().encode("utf-8")
        first_accounts = self.name == "accounts" and self.n_files == 0
        if first_accounts or rng.random() < RATE_BOM_FILE:
            data = BOM + data
        path.write_bytes(data)
        return nrec

    def _bad_csv_line(self, row: list) -> str:
        rng = self.rng
        src = ["" if v is None else str(v) for v in row]
        if rng.random() < 0.5:
            bad = src[: max(1, len(src) - rng.randint(2, 4))]           # too few fields
        else:
            bad = src + ["EXTRA", "garbage"][: rng.randint(1, 2)]        # too many fields
        b = io.StringIO()
        csv.writer(b, quoting=csv.QUOTE_MINIMAL, lineterminator="\n").writerow(bad)
        return b.getvalue()

    def _write_jsonl(self, path: Path, rows: list) -> int:
        rng = self.rng
        lines = []
        for obj in rows:
            if rng.random() < RATE_MALFORMED_LINE:
                s = json.dumps(obj, ensure_ascii=False)
                if rng.random() < 0.6:
                    lines.append(s[: max(5, len(s) * rng.randint(3, 8) // 10)])   # truncated JSON
                else:
                    lines.append(rng.choice((
                        "this is not json",
                        "<event>garbage</event>",
                        f"event_id={obj.get('event_id')};broken=true",
                        "{'single': 'quotes'}",
                    )))
            lines.append(json.dumps(obj, ensure_ascii=False))
        path.write_bytes(("\n".join(lines) + "\n").encode("utf-8") if lines else b"")
        return len(lines)

    def _write_parquet(self, path: Path, rows: list) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        ts = pa.timestamp("us", tz="UTC")
        dec = pa.decimal128(18, 2)
        schema = pa.schema([
            ("order_id", pa.string()), ("customer_id", pa.string()), ("product_id", pa.string()),
            ("order_ts", ts), ("quantity", pa.int32()), ("unit_price", dec), ("amount", dec),
            ("currency", pa.string()), ("status", pa.string()), ("last_modified_ts", ts),
        ])
        cols = list(zip(*rows)) if rows else [()] * len(ORDER_COLS)

        def decs(vals):
            return [None if v is None else Decimal(v).scaleb(-2) for v in vals]

        arrays = [
            pa.array(cols[0], pa.string()), pa.array(cols[1], pa.string()), pa.array(cols[2], pa.string()),
            pa.array(cols[3], ts), pa.array(cols[4], pa.int32()), pa.array(decs(cols[5]), dec),
            pa.array(decs(cols[6]), dec), pa.array(cols[7], pa.string()), pa.array(cols[8], pa.string()),
            pa.array(cols[9], ts),
        ]
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)
        return len(rows)


# --------------------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------------------
class _Ctx:
    def __init__(self, out: Path, days: int, seed: int, scale: float, start: date):
        self.out = out
        self.days = days
        self.seed = seed
        self.scale = scale
        self.start = start
        self.dates = [start + timedelta(days=i) for i in range(days)]
        self.day_start = [int(datetime(x.year, x.month, x.day, tzinfo=timezone.utc).timestamp()) for x in self.dates]
        self.fx_first = start - timedelta(days=FX_HISTORY_DAYS - 1)
        self.fx = _Fx(self.rng("fx-series"), self.fx_first, self.dates[-1] + timedelta(days=10))
        self.late_fx_day = min(LATE_FX_START_DAY, days - 1)
        self.totals: dict[str, int] = {}
        self.nfiles: dict[str, int] = {}
        # filled by the generators, used by the dependent ones
        self.account_emails: list[str] = []
        self.account_shared_emails: list[str] = []
        self.accounts_cum: list[int] = []
        self.customers_cum: list[int] = []
        self.products_cum: list[int] = []
        self.product_price_usd: list[float] = []

    def rng(self, *parts) -> random.Random:
        return random.Random("sample-data|%d|%s" % (self.seed, "|".join(str(p) for p in parts)))

    def n(self, name: str) -> int:
        return max(1, round(BASE_VOLUMES[name] * self.scale * self.days / BASE_DAYS))

    def rand_sec(self, rng: random.Random, d: int) -> int:
        return self.day_start[d] + rng.randrange(DAY_SECONDS)

    def day_of(self, sec: int) -> int:
        return (sec - self.day_start[0]) // DAY_SECONDS

    def done(self, w: _Writer) -> None:
        self.totals[w.name] = w.finish()
        self.nfiles[w.name] = w.n_files


# --------------------------------------------------------------------------------------
# crm/accounts
# --------------------------------------------------------------------------------------
ACCOUNT_SPEC = _Spec(ACCOUNT_COLS, key=("account_id",), required=("last_modified_date",),
                     text=("account_name", "billing_city"), timestamps=("created_date", "last_modified_date"),
                     numbers=("annual_revenue",), codes=("billing_country",), emails=("primary_email",),
                     ids=("account_id",))


def _company_name(rng: random.Random) -> str:
    x = rng.random()
    if x < 0.04:
        return f"{rng.choice(LAST_NAMES)}, {rng.choice(LAST_NAMES)} & Co"      # needs quoting (comma)
    if x < 0.05:
        return f'The "{rng.choice(COMPANY_A)}" Company'                        # embedded double quotes
    if x < 0.05 + RATE_EMBEDDED_NEWLINE:
        return f"{rng.choice(COMPANY_A)}\nHoldings"                            # embedded newline (quoted)
    return f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)}"


def _gen_accounts(ctx: _Ctx) -> None:
    name = "accounts"
    rng = ctx.rng(name)
    days = ctx.days
    quotas = _quotas(rng, ctx.n(name), days, FIRST_DAY_BOOST)
    sched = [[] for _ in range(days)]
    w = _Writer(ctx, name)
    next_id = 1
    geo_pairs = [((c, w_, cs), w_) for c, w_, cs in COUNTRY_CITIES]
    shared: set = set()       # emails already shared (membership only)

    def row(st):
        r = [st["id"], st["name"], st["industry"], st["revenue"], st["city"], st["country"], st["email"],
             st["created_s"], st["v_str"]]
        _mutate(rng, r, ACCOUNT_SPEC)
        _crm_date_only(rng, r, (7, 8))
        if rng.random() < RATE_INVALID_VALUE and r[3] and r[3][0].isdigit():
            r[3] = "-" + r[3]
        x = rng.random()
        if x < RATE_INDUSTRY_OTHER:
            r[2] = rng.choice(OTHER_INDUSTRIES)
        elif x < RATE_INDUSTRY_OTHER + RATE_INDUSTRY_NULL:
            r[2] = rng.choice(NULL_LIKE)
        elif x < RATE_INDUSTRY_OTHER + RATE_INDUSTRY_NULL + RATE_MIXED_CASE_CODE and r[2]:
            r[2] = _messy_code(rng, r[2])
        return r

    def revenue():
        if rng.random() < 0.5:
            return str(rng.randrange(50, 50_000) * 10_000)
        return _cents_str(rng.randrange(10_000_000, 5_000_000_000_00))

    for d in range(days):
        rows = []
        dt = ctx.dates[d]
        for kind, st in sched[d]:
            if kind == "update":
                sec = ctx.rand_sec(rng, d)
                st["v_sec"], st["v_str"] = sec, _crm_ts(rng, sec)
                st["revenue"] = revenue()
                if rng.random() < 0.3:
                    country, _, cities = _weighted(rng, geo_pairs)
                    st["country"], st["city"] = country, rng.choice(cities)
                if rng.random() < 0.1:
                    st["industry"] = rng.choice(INDUSTRIES)
                rows.append(row(st))
                _maybe_repeat(rng, sched, d, days, st)
            elif kind == "stale":
                sec = st["v_sec"] - rng.randint(1, 30) * DAY_SECONDS - rng.randrange(3600)
                s2 = dict(st, v_str=_crm_ts(rng, sec), revenue=revenue())
                rows.append(row(s2))
            else:  # tie: same last_modified_date (the same instant, maybe written in another zone), other content
                rows.append(row(dict(st, v_str=_same_instant(rng, st["v_str"], st["v_sec"]), revenue=revenue(),
                                     city=st["city"] + " Downtown")))
        n_new = max(quotas[d] - len(sched[d]), int(MIN_NEW_SHARE * quotas[d]))
        for _ in range(n_new):
            aid = f"ACC-{next_id:07d}"
            nm = _company_name(rng)
            country, _, cities = _weighted(rng, geo_pairs)
            email = None
            if ctx.account_emails and rng.random() < RATE_ACCOUNT_SHARED_EMAIL:
                email = rng.choice(ctx.account_emails)      # shared with exactly one earlier account
                if email in shared:
                    email = None
                else:
                    shared.add(email)
                    ctx.account_shared_emails.append(email)
            if email is None:
                slug = _ascii(nm.split("\n")[0])[:14] or "company"
                email = f"{rng.choice(ACCOUNT_EMAIL_ROLES)}@{slug}{next_id}.com"
            ctx.account_emails.append(email)
            sec = ctx.rand_sec(rng, d)
            if rng.random() < 0.4:
                created = sec - rng.randint(0, 1500) * DAY_SECONDS - rng.randrange(DAY_SECONDS)
            else:
                created = sec - rng.randrange(min(3600, sec - ctx.day_start[d]) + 1)   # earlier that day
            st = {"id": aid, "name": nm, "industry": rng.choice(INDUSTRIES), "revenue": revenue(),
                  "city": rng.choice(cities), "country": country, "email": email,
                  "created_s": _crm_ts(rng, created), "v_sec": sec, "v_str": _crm_ts(rng, sec)}
            rows.append(row(st))
            _plan_fate(rng, sched, d, days, st, UPDATE_RATE[name], w.ties)
            next_id += 1
        sched[d] = []
        ctx.accounts_cum.append(next_id - 1)
        w.write_day(d, rows, force_parts=2 if d == 1 else None)
    ctx.done(w)


# --------------------------------------------------------------------------------------
# crm/contacts
# --------------------------------------------------------------------------------------
CONTACT_SPEC = _Spec(CONTACT_COLS, key=("contact_id",), required=("last_modified_at",),
                     text=("first_name", "last_name", "phone"), timestamps=("created_at", "last_modified_at"),
                     codes=("lifecycle_stage",), emails=("email",), ids=("contact_id", "account_id"))


def _orphan_id(rng: random.Random, prefix: str, width: int) -> str:
    """An id of the right shape that is never generated (one digit longer, leading 9; or all zeros)."""
    if rng.random() < 0.2:
        return f"{prefix}-{0:0{width}d}"
    return f"{prefix}-9{rng.randrange(10 ** width):0{width}d}"


def _gen_contacts(ctx: _Ctx) -> None:
    name = "contacts"
    rng = ctx.rng(name)
    days = ctx.days
    quotas = _quotas(rng, ctx.n(name), days)
    sched = [[] for _ in range(days)]
    w = _Writer(ctx, name)
    next_id = 1

    def row(st):
        r = [st["id"], st["account_id"], st["first"], st["last"], st["email"], st["phone"], st["stage"],
             st["created_s"], st["v_str"]]
        _mutate(rng, r, CONTACT_SPEC)
        if r[1] and rng.random() < RATE_ORPHAN:
            r[1] = _orphan_id(rng, "ACC", 7)
        return r

    for d in range(days):
        rows = []
        for kind, st in sched[d]:
            if kind == "update":
                sec = ctx.rand_sec(rng, d)
                st["v_sec"], st["v_str"] = sec, _fmt_ts(rng, sec, rng.randrange(1000))
                i = LIFECYCLE_STAGES.index(st["stage"])
                st["stage"] = LIFECYCLE_STAGES[min(i + 1, len(LIFECYCLE_STAGES) - 1)]
                if rng.random() < 0.4:
                    st["phone"] = _phone(rng)
                rows.append(row(st))
                _maybe_repeat(rng, sched, d, days, st)
            elif kind == "stale":
                sec = st["v_sec"] - rng.randint(3600, 20 * DAY_SECONDS)
                rows.append(row(dict(st, v_str=_fmt_ts(rng, sec, rng.randrange(1000)), phone=_phone(rng))))
            else:
                rows.append(row(dict(st, v_str=_same_instant(rng, st["v_str"], st["v_sec"]), phone=_phone(rng))))
        n_new = max(quotas[d] - len(sched[d]), int(MIN_NEW_SHARE * quotas[d]))
        n_acc = ctx.accounts_cum[d]
        for _ in range(n_new):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            if rng.random() < 0.05 or n_acc < 1:
                acc, dom = None, rng.choice(FREE_EMAIL_DOMAINS)
            else:
                a = rng.randint(1, n_acc)
                acc, dom = f"ACC-{a:07d}", ctx.account_emails[a - 1].split("@", 1)[1]
            sec = ctx.rand_sec(rng, d)
            created = sec - (rng.randrange(400 * DAY_SECONDS) if rng.random() < 0.3 else rng.randrange(3600))
            st = {"id": f"CON-{next_id:07d}", "account_id": acc, "first": first, "last": last,
                  "email": f"{_ascii(first)}.{_ascii(last)}@{dom}", "phone": _phone(rng) if rng.random() < 0.85 else None,
                  "stage": rng.choice(LIFECYCLE_STAGES[:5]), "created_s": _fmt_ts(rng, created, rng.randrange(1000)),
                  "v_sec": sec}
            st["v_str"] = _fmt_ts(rng, sec, rng.randrange(1000))
            rows.append(row(st))
            _plan_fate(rng, sched, d, days, st, UPDATE_RATE[name], w.ties)
            next_id += 1
        sched[d] = []
        w.write_day(d, rows)
    ctx.done(w)


# --------------------------------------------------------------------------------------
# crm/opportunities
# --------------------------------------------------------------------------------------
OPP_SPEC = _Spec(OPP_COLS, key=("opportunity_id",),
                 required=("account_id", "amount", "currency", "stage", "created_date", "last_modified_date"),
                 text=("opportunity_name",), dates=("close_date",), timestamps=("created_date", "last_modified_date"),
                 numbers=("amount", "probability"), codes=("currency", "stage"), ids=("opportunity_id", "account_id"))


def _gen_opportunities(ctx: _Ctx) -> None:
    name = "opportunities"
    rng = ctx.rng(name)
    days = ctx.days
    quotas = _quotas(rng, ctx.n(name), days)
    sched = [[] for _ in range(days)]
    w = _Writer(ctx, name)
    next_id = 1

    def row(st):
        r = [st["id"], st["account_id"], st["name"], st["stage"], _money_str(rng, st["amount"]), st["ccy"],
             st["close"].isoformat(), str(STAGE_PROBABILITY[st["stage"]]), st["created_s"], st["v_str"]]
        if rng.random() < 0.05:
            r[7] = None                                            # probability is optional
        _mutate(rng, r, OPP_SPEC)
        r_ = rng.random
        if r_() < RATE_INVALID_VALUE and r[4] and r[4][0].isdigit():
            r[4] = "-" + r[4]
        if r_() < RATE_INVALID_VALUE:
            r[7] = "150"
        if r_() < RATE_INVALID_VALUE:
            r[3] = rng.choice(INVALID_STAGES)
        if r_() < RATE_UNKNOWN_CURRENCY:
            r[5] = rng.choice(UNKNOWN_CURRENCIES)
        if r[1] and r_() < RATE_ORPHAN:
            r[1] = _orphan_id(rng, "ACC", 7)
        _crm_date_only(rng, r, (8, 9))
        return r

    for d in range(days):
        rows = []
        dt = ctx.dates[d]
        for kind, st in sched[d]:
            if kind == "update":
                sec = ctx.rand_sec(rng, d)
                st["v_sec"], st["v_str"] = sec, _crm_ts(rng, sec)
                if st["stage"] not in ("Closed Won", "Closed Lost"):
                    i = STAGES.index(st["stage"])
                    st["stage"] = rng.choice(("Closed Won", "Closed Lost")) if i >= 3 else STAGES[i + 1]
                st["amount"] = max(100_00, int(st["amount"] * rng.uniform(0.8, 1.2)))
                rows.append(row(st))
                _maybe_repeat(rng, sched, d, days, st)
            elif kind == "stale":
                sec = st["v_sec"] - rng.randint(1, 20) * DAY_SECONDS - rng.randrange(3600)
                rows.append(row(dict(st, v_str=_crm_ts(rng, sec), amount=st["amount"] + 1000_00)))
            else:  # tie: the same instant (maybe in another zone), other content
                rows.append(row(dict(st, v_str=_same_instant(rng, st["v_str"], st["v_sec"]),
                                     amount=st["amount"] + 500_00, name=st["name"] + " (rev)")))
        n_new = max(quotas[d] - len(sched[d]), int(MIN_NEW_SHARE * quotas[d]))
        n_acc = ctx.accounts_cum[d]
        for _ in range(n_new):
            ccy = _weighted(rng, OPP_CURRENCY_WEIGHTS)
            x = rng.random()
            if x < 0.5:
                created = dt
            else:
                created = dt - timedelta(days=rng.randint(1, 540))
            if ccy != "USD" and rng.random() < RATE_OPP_BEFORE_FX_HISTORY / 0.30:
                created = ctx.fx_first - timedelta(days=rng.randint(1, 400))
            stage = rng.choice(STAGES) if created < dt else rng.choice(STAGES[:3])
            # created_date is a timestamp whose UTC date is `created` (the FX conversion date);
            # last_modified_date a time of day d after it
            sec = ctx.rand_sec(rng, d)
            if created == dt:
                created_sec = ctx.day_start[d] + rng.randrange(sec - ctx.day_start[d] + 1)
            else:
                created_sec = _epoch(created) + rng.randrange(DAY_SECONDS)
            usd = rng.choice((5_000, 10_000, 25_000, 50_000, 120_000, 400_000)) * rng.uniform(0.5, 1.5)
            st = {"id": f"OPP-{next_id:07d}", "account_id": f"ACC-{rng.randint(1, max(1, n_acc)):07d}",
                  "name": f"{rng.choice(COMPANY_A)} - {rng.choice(OPP_THEMES)}", "stage": stage,
                  "amount": _to_ccy_cents(usd, ctx.fx.rate(ccy, created), ccy), "ccy": ccy,
                  "close": created + timedelta(days=rng.randint(14, 240)),
                  "created_s": _crm_ts(rng, created_sec), "v_sec": sec, "v_str": _crm_ts(rng, sec)}
            rows.append(row(st))
            _plan_fate(rng, sched, d, days, st, UPDATE_RATE[name], w.ties)
            next_id += 1
        sched[d] = []
        w.write_day(d, rows)
    ctx.done(w)


# --------------------------------------------------------------------------------------
# warehouse/customers
# --------------------------------------------------------------------------------------
CUSTOMER_SPEC = _Spec(CUSTOMER_COLS, key=("customer_id",), required=("last_modified_ts",),
                      text=("first_name", "last_name", "phone"), dates=("signup_date",),
                      timestamps=("last_modified_ts",), codes=("country", "segment"), emails=("email",),
                      ids=("customer_id",))


def _gen_customers(ctx: _Ctx) -> None:
    name = "customers"
    rng = ctx.rng(name)
    days = ctx.days
    quotas = _quotas(rng, ctx.n(name), days, FIRST_DAY_BOOST)
    sched = [[] for _ in range(days)]
    w = _Writer(ctx, name)
    next_id = 1
    countries = [(c, wt) for c, wt, _ in COUNTRY_CITIES]
    drift_day = min(2, days - 1)

    def row(st):
        r = [st["id"], st["email"], st["first"], st["last"], st["phone"], st["country"], st["segment"],
             st["signup"].isoformat(), st["v_str"]]
        _mutate(rng, r, CUSTOMER_SPEC)
        if rng.random() < RATE_INVALID_VALUE:
            r[5] = rng.choice(INVALID_COUNTRIES)
        return r

    for d in range(days):
        rows = []
        dt = ctx.dates[d]
        for kind, st in sched[d]:
            if kind == "update":
                sec = ctx.rand_sec(rng, d)
                st["v_sec"], st["v_str"] = sec, _fmt_ts(rng, sec, rng.randrange(1000))
                x = rng.random()
                if x < 0.4:
                    st["phone"] = _phone(rng)
                elif x < 0.7:
                    st["segment"] = rng.choice(SEGMENTS)
                elif x < 0.85:
                    st["country"] = _weighted(rng, countries)
                else:
                    st["email"] = f"{_ascii(st['first'])}.{_ascii(st['last'])}{rng.randrange(10000)}@" \
                                  f"{rng.choice(FREE_EMAIL_DOMAINS)}"
                rows.append(row(st))
                _maybe_repeat(rng, sched, d, days, st)
            elif kind == "stale":
                sec = st["v_sec"] - rng.randint(3600, 10 * DAY_SECONDS)
                rows.append(row(dict(st, v_str=_fmt_ts(rng, sec, rng.randrange(1000)), segment=rng.choice(SEGMENTS))))
            else:
                rows.append(row(dict(st, v_str=_same_instant(rng, st["v_str"], st["v_sec"]), phone=_phone(rng))))
        n_new = max(quotas[d] - len(sched[d]), int(MIN_NEW_SHARE * quotas[d]))
        for _ in range(n_new):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            if ctx.account_emails and rng.random() < RATE_CUSTOMER_MATCHES_ACCOUNT:
                if ctx.account_shared_emails and rng.random() < RATE_MATCH_SHARED:
                    email = rng.choice(ctx.account_shared_emails)
                else:
                    email = rng.choice(ctx.account_emails)
            else:
                email = f"{_ascii(first)}.{_ascii(last)}{rng.randrange(10000)}@{rng.choice(FREE_EMAIL_DOMAINS)}"
            sec = ctx.rand_sec(rng, d)
            signup = dt - timedelta(days=rng.randint(0, 1200)) if rng.random() < 0.5 else dt
            st = {"id": f"CUS-{next_id:07d}", "email": email if rng.random() > 0.02 else None, "first": first,
                  "last": last, "phone": _phone(rng) if rng.random() < 0.8 else None,
                  "country": _weighted(rng, countries) if rng.random() > 0.01 else None,
                  "segment": rng.choice(SEGMENTS), "signup": signup, "v_sec": sec}
            st["v_str"] = _fmt_ts(rng, sec, rng.randrange(1000))
            rows.append(row(st))
            _plan_fate(rng, sched, d, days, st, UPDATE_RATE[name], w.ties)
            next_id += 1
        sched[d] = []
        ctx.customers_cum.append(next_id - 1)
        drift = ("add", "loyalty_tier", ("bronze", "silver", "gold", "")) if SCHEMA_DRIFT and d == drift_day else None
        w.write_day(d, rows, drift=drift)
    ctx.done(w)


# --------------------------------------------------------------------------------------
# warehouse/products
# --------------------------------------------------------------------------------------
PRODUCT_SPEC = _Spec(PRODUCT_COLS, key=("product_id",), required=("unit_price", "currency", "last_modified_ts"),
                     text=("sku", "product_name", "category"), timestamps=("last_modified_ts",),
                     numbers=("unit_price",), codes=("currency",), ids=("product_id",))


def _gen_products(ctx: _Ctx) -> None:
    name = "products"
    rng = ctx.rng(name)
    days = ctx.days
    quotas = _quotas(rng, ctx.n(name), days, FIRST_DAY_BOOST)
    sched = [[] for _ in range(days)]
    w = _Writer(ctx, name)
    next_id = 1
    drift_day = min(3, days - 1)

    def row(st, d):
        cents = _to_ccy_cents(st["usd"], ctx.fx.rate(st["ccy"], ctx.dates[d]), st["ccy"])
        active = "true" if st["active"] else "false"
        if rng.random() < 0.05:
            active = active.upper() if rng.random() < 0.5 else active.title()
        r = [st["id"], st["sku"], st["name"], st["category"], _money_str(rng, cents), st["ccy"], active, st["v_str"]]
        _mutate(rng, r, PRODUCT_SPEC)
        r_ = rng.random
        if r_() < RATE_INVALID_VALUE and r[4] and r[4][0].isdigit():
            r[4] = "-" + r[4]
        if r_() < RATE_INVALID_VALUE:
            r[6] = "maybe"
        if r_() < RATE_UNKNOWN_CURRENCY:
            r[5] = rng.choice(UNKNOWN_CURRENCIES)
        return r

    for d in range(days):
        rows = []
        for kind, st in sched[d]:
            if kind == "update":
                sec = ctx.rand_sec(rng, d)
                st["v_sec"], st["v_str"] = sec, _fmt_ts(rng, sec, rng.randrange(1000))
                if rng.random() < 0.8:
                    st["usd"] = round(st["usd"] * rng.uniform(0.85, 1.15), 2)
                else:
                    st["active"] = not st["active"]
                rows.append(row(st, d))
                _maybe_repeat(rng, sched, d, days, st)
            elif kind == "stale":
                sec = st["v_sec"] - rng.randint(3600, 10 * DAY_SECONDS)
                rows.append(row(dict(st, v_str=_fmt_ts(rng, sec, rng.randrange(1000)), usd=st["usd"] * 1.5), d))
            else:
                rows.append(row(dict(st, v_str=_same_instant(rng, st["v_str"], st["v_sec"]),
                                     usd=round(st["usd"] * 0.9, 2)), d))
        n_new = max(quotas[d] - len(sched[d]), int(MIN_NEW_SHARE * quotas[d]))
        for _ in range(n_new):
            cat = rng.choice(CATEGORIES)
            usd = round(math.exp(rng.uniform(math.log(2), math.log(1500))), 2)
            sec = ctx.rand_sec(rng, d)
            st = {"id": f"PRD-{next_id:07d}", "sku": f"SKU-{_ascii(cat)[:3].upper()}-{next_id:06d}",
                  "name": f"{rng.choice(PRODUCT_ADJ)} {rng.choice(PRODUCT_MAT)} {rng.choice(PRODUCT_NOUN)}",
                  "category": cat, "usd": usd, "ccy": _weighted(rng, PRODUCT_CURRENCY_WEIGHTS),
                  "active": rng.random() < 0.92, "v_sec": sec}
            st["v_str"] = _fmt_ts(rng, sec, rng.randrange(1000))
            ctx.product_price_usd.append(usd)
            rows.append(row(st, d))
            _plan_fate(rng, sched, d, days, st, UPDATE_RATE[name], w.ties)
            next_id += 1
        sched[d] = []
        ctx.products_cum.append(next_id - 1)
        drift = ("drop", "is_active", None) if SCHEMA_DRIFT and d == drift_day else None
        w.write_day(d, rows, drift=drift)
    ctx.done(w)


# --------------------------------------------------------------------------------------
# warehouse/orders (Parquet) + stream/order_events (JSON Lines)
# --------------------------------------------------------------------------------------
def _lifecycle(rng: random.Random, order_us: int) -> list[tuple[str, int]]:
    """Status transitions (status, ts_us) of an order, starting with PLACED at order_ts."""
    m = 60 * US
    h = 60 * m
    t = order_us
    out = [("PLACED", t)]
    if rng.random() < 0.04:
        out.append(("CANCELLED", t + rng.randint(10 * m, 6 * h)))
        return out
    t += rng.randint(1 * m, 3 * h)
    out.append(("PAID", t))
    if rng.random() < 0.03:
        out.append(("CANCELLED", t + rng.randint(1 * h, 20 * h)))
        return out
    t += rng.randint(6 * h, 48 * h)
    out.append(("SHIPPED", t))
    t += rng.randint(24 * h, 96 * h)
    out.append(("DELIVERED", t))
    if rng.random() < 0.06:
        out.append(("RETURNED", t + rng.randint(48 * h, 240 * h)))
    return out


PAYMENT_METHODS = ("card", "paypal", "bank_transfer", "apple_pay", "gift_card")
CARRIERS = ("UPS", "FedEx", "DHL", "USPS", "Royal Mail")
CANCEL_REASONS = ("customer_request", "payment_failed", "out_of_stock", "fraud_suspected")
RETURN_REASONS = ("damaged", "wrong_size", "not_as_described", "changed_mind")


def _payload(rng: random.Random, status: str, order_id: str) -> dict:
    if status == "PLACED":
        return {"channel": rng.choice(("web", "app", "marketplace")), "items": rng.randint(1, 5)}
    if status == "PAID":
        return {"payment_method": rng.choice(PAYMENT_METHODS), "psp_ref": f"psp_{rng.getrandbits(40):010x}"}
    if status == "SHIPPED":
        return {"carrier": rng.choice(CARRIERS), "tracking": f"1Z{rng.getrandbits(48):012X}"}
    if status == "DELIVERED":
        return {"signed_by": rng.choice(("", "front door", "neighbour", "recipient")) or None}
    if status == "CANCELLED":
        return {"reason": rng.choice(CANCEL_REASONS)}
    if status == "RETURNED":
        return {"reason": rng.choice(RETURN_REASONS), "rma": f"RMA-{order_id[-6:]}"}
    return {"note": "unexpected"}


def _gen_orders_and_events(ctx: _Ctx) -> None:
    name = "orders"
    rng = ctx.rng(name)
    erng = ctx.rng("order_events")
    days = ctx.days
    quotas = _quotas(rng, ctx.n(name), days)
    # events per participating order within a 7-day window is ~3; P_ORDER_HAS_EVENTS is tuned for the
    # base ratio, rescaled if the configured volumes change
    p_events = min(1.0, P_ORDER_HAS_EVENTS * (ctx.n("order_events") / ctx.n(name)) / 0.5)
    sched = [[] for _ in range(days)]          # order versions: (kind, state)
    ev_sched = [[] for _ in range(days)]       # events: (order_id, customer_id, status, ts_ms, payload_seed)
    ow = _Writer(ctx, name)
    ew = _Writer(ctx, "order_events")
    next_id = 1
    reused_events: list[list] = [[] for _ in range(days)]

    def order_row(st, status, lm_us):
        r = [st["id"], st["cust"], st["prod"], st["ts"], st["qty"], st["price"], st["amount"], st["ccy"], status,
             lm_us]
        x = rng.random
        if x() < RATE_NULL_KEY:
            r[0] = rng.choice(NULL_LIKE)
        if x() < RATE_NULL_REQUIRED:
            i = rng.choice((1, 2, 3, 4, 6, 7, 8, 9))
            r[i] = rng.choice(("", None)) if i in (1, 2, 7, 8) else None
        if x() < RATE_PADDED_ID:
            i = rng.choice((0, 1, 2))
            if r[i]:
                r[i] = _pad(rng, r[i])
        if x() < RATE_MIXED_CASE_CODE:
            i = rng.choice((7, 8))
            if r[i]:
                r[i] = _messy_code(rng, r[i])
        if x() < RATE_INVALID_VALUE and r[4] is not None:
            r[4] = rng.choice((0, 0, -1))
        if x() < RATE_INVALID_VALUE and r[6] is not None:
            r[6] = -abs(r[6]) if r[6] else -100
            if rng.random() < 0.5 and r[5]:
                r[5] = -abs(r[5])
        if x() < RATE_INVALID_VALUE:
            r[8] = rng.choice(INVALID_STATUSES)
        if x() < RATE_UNKNOWN_CURRENCY:
            r[7] = rng.choice(UNKNOWN_CURRENCIES)
        if x() < RATE_ORPHAN:
            if rng.random() < 0.5:
                r[1] = _orphan_id(rng, "CUS", 7)
            else:
                r[2] = _orphan_id(rng, "PRD", 7)
        return r

    def event_row(order_id, cust, status, ts_ms):
        if erng.random() < RATE_EVENT_NULL_CUSTOMER:
            cust = None
        ev = {"event_id": _uuid(erng), "order_id": order_id, "customer_id": cust, "event_type": status,
              "event_ts": _fmt_ts(erng, ts_ms // 1000, ts_ms % 1000), "payload": _payload(erng, status, order_id)}
        x = erng.random
        if x() < RATE_NULL_KEY:
            ev["event_id"] = erng.choice(NULL_LIKE)
        if x() < RATE_NULL_REQUIRED:
            ev[erng.choice(("order_id", "event_type", "event_ts"))] = erng.choice(NULL_LIKE)
        if x() < RATE_BAD_TIMESTAMP:
            ev["event_ts"] = erng.choice(BAD_TIMESTAMPS)
        if x() < RATE_MIXED_CASE_CODE and ev["event_type"]:
            ev["event_type"] = _messy_code(erng, ev["event_type"])
        if x() < RATE_INVALID_VALUE:
            ev["event_type"] = erng.choice(INVALID_EVENT_TYPES)
        if x() < RATE_ORPHAN:
            ev["order_id"] = _orphan_id(erng, "ORD", 8)
        if x() < RATE_PADDED_ID and ev["order_id"]:
            ev["order_id"] = _pad(erng, ev["order_id"])
        if x() < RATE_EMPTY_OR_PADDED and ev["customer_id"]:
            ev["customer_id"] = erng.choice(("", "  ", _pad(erng, ev["customer_id"])))
        if ev["customer_id"] is None and x() < RATE_OMIT_NULL_KEY:
            del ev["customer_id"]
        return ev

    for d in range(days):
        rows = []
        day_end_us = ctx.day_start[d] * US + DAY_SECONDS * US
        for kind, st in sched[d]:
            if kind == "update":
                rows.append(order_row(st, st["upd_status"].pop(0), st["upd_ts"].pop(0)))
            elif kind == "stale":
                rows.append(order_row(dict(st, qty=st["qty"] + 1), "PLACED", st["v_us"] - rng.randint(1, 3600) * US))
            else:
                rows.append(order_row(dict(st, amount=st["amount"] - 1), st["v_status"], st["v_us"]))
        n_new = max(quotas[d] - len(sched[d]), int(MIN_NEW_SHARE * quotas[d]))
        n_cust, n_prod = max(1, ctx.customers_cum[d]), max(1, ctx.products_cum[d])
        for _ in range(n_new):
            oid = f"ORD-{next_id:08d}"
            next_id += 1
            cust = f"CUS-{rng.randint(1, n_cust):07d}"
            p = rng.randint(1, n_prod)
            prod = f"PRD-{p:07d}"
            base_us = ctx.day_start[d] * US
            if rng.random() < 0.9:
                ts_us = base_us + rng.randrange(DAY_SECONDS * US)
            else:                                   # late arrival: a little before dt
                ts_us = base_us - rng.randrange(1, 2 * DAY_SECONDS * US)
            ts_us -= ts_us % 1000                   # millisecond precision
            ccy = _weighted(rng, ORDER_CURRENCY_WEIGHTS)
            order_date = ctx.start + timedelta(days=(ts_us // US - ctx.day_start[0]) // DAY_SECONDS)
            usd = ctx.product_price_usd[p - 1] if p <= len(ctx.product_price_usd) else 19.99
            price = _to_ccy_cents(usd, ctx.fx.rate(ccy, order_date), ccy)
            qty = rng.choice((1, 1, 1, 1, 2, 2, 3, 4, 5, 10))
            amount = qty * price
            if rng.random() < 0.03:                 # discount: amount != quantity * unit_price
                amount = int(amount * 0.9)
            life = _lifecycle(rng, ts_us)
            k = 0
            while k + 1 < len(life) and life[k + 1][1] < day_end_us:
                k += 1
            status, lm_us = life[k]
            lm_us += rng.randrange(0, 5 * US)
            lm_us -= lm_us % 1000
            st = {"id": oid, "cust": cust, "prod": prod, "ts": ts_us, "qty": qty, "price": price, "amount": amount,
                  "ccy": ccy, "v_status": status, "v_us": lm_us}
            # anomalies that change the order time itself
            x = rng.random()
            if x < RATE_FUTURE_ORDER:
                if rng.random() < 0.1:
                    st["ts"] = base_us + 2 * DAY_SECONDS * US                       # exactly dt+2 00:00:00Z
                else:
                    st["ts"] = base_us + rng.randrange(2 * DAY_SECONDS * US, 6 * DAY_SECONDS * US)
            elif x < RATE_FUTURE_ORDER + RATE_NEAR_FUTURE_ORDER:
                st["ts"] = base_us + 2 * DAY_SECONDS * US - rng.choice((1, 1000, 3600 * US))  # dt+1, allowed
            rows.append(order_row(st, status, lm_us))
            # later status changes -> new order versions
            upd = [(s, t) for s, t in life[k + 1:] if ctx.day_of(t // US) < days]
            chosen = [(s, t) for s, t in upd if rng.random() < RATE_ORDER_STATUS_UPDATE]
            if chosen:
                st["upd_status"] = [s for s, _ in chosen]
                st["upd_ts"] = [t - t % 1000 + 1000 for _, t in chosen]
                for _, t in chosen:
                    sched[ctx.day_of(t // US)].append(("update", st))
            elif d < days - 1:
                y = rng.random()
                if y < RATE_STALE_VERSION:
                    sched[rng.randint(d + 1, days - 1)].append(("stale", st))
                elif y < RATE_STALE_VERSION + RATE_VERSION_TIE:
                    sched[rng.randint(d + 1, days - 1)].append(("tie", st))
                    ow.ties.add(oid)
            # streamed lifecycle events
            if erng.random() < p_events:
                last_day_ev = None
                for s, t in life:
                    # whole second strictly after the transition, so a format without fraction stays after order_ts
                    ts_ms = (t // US + 1 + erng.randrange(0, 5)) * 1000 + erng.randrange(1000)
                    ed = max(d, ctx.day_of(ts_ms // 1000))
                    if ed < days:
                        ev_sched[ed].append((oid, cust, s, ts_ms))
                        last_day_ev = (ed, s, ts_ms)
                if last_day_ev and erng.random() < RATE_EVENT_TS_TIE:
                    ed, s, ts_ms = last_day_ev
                    other = erng.choice([x_ for x_ in ORDER_STATUSES if x_ != s])
                    ev_sched[ed].append((oid, cust, other, ts_ms))
        sched[d] = []
        ow.write_day(d, rows)
        # events of the day
        evs = [event_row(*e) for e in ev_sched[d]]
        evs.extend(reused_events[d])
        for ev in evs:
            if d < days - 1 and erng.random() < RATE_EVENT_KEY_REUSE and ev.get("event_id"):
                ew.ties.add(ev["event_id"].strip())
                ev2 = dict(ev, payload={"note": "re-sent", "attempt": 2})
                reused_events[erng.randint(d + 1, days - 1)].append(ev2)
        erng.shuffle(evs)
        ev_sched[d] = []
        ew.write_day(d, evs)
    ctx.done(ow)
    ctx.done(ew)


# --------------------------------------------------------------------------------------
# web/behavior (JSON Lines)
# --------------------------------------------------------------------------------------
EVENT_WEIGHTS = (("page_view", 0.35), ("product_view", 0.25), ("search", 0.12), ("add_to_cart", 0.10),
                 ("checkout", 0.05), ("purchase", 0.03))


def _gen_behavior(ctx: _Ctx) -> None:
    name = "behavior"
    rng = ctx.rng(name)
    days = ctx.days
    quotas = _quotas(rng, ctx.n(name), days)
    w = _Writer(ctx, name)
    countries = [(c, wt) for c, wt, _ in COUNTRY_CITIES]
    reused: list[list] = [[] for _ in range(days)]

    def metadata(ev_name, n_prod):
        pid = f"PRD-{rng.randint(1, n_prod):07d}"
        if ev_name == "page_view":
            m = {"load_ms": rng.randint(80, 4000), "lang": rng.choice(("en", "de", "fr", "es", "ja"))}
        elif ev_name == "product_view":
            m = {"product_id": pid, "price": round(rng.uniform(2, 1500), 2)}
        elif ev_name == "add_to_cart":
            m = {"product_id": pid, "quantity": rng.randint(1, 4)}
        elif ev_name == "checkout":
            m = {"cart_value": round(rng.uniform(5, 3000), 2), "items": rng.randint(1, 8)}
        elif ev_name == "purchase":
            m = {"order_value": round(rng.uniform(5, 3000), 2), "currency": rng.choice(("USD", "EUR", "GBP"))}
        elif ev_name == "search":
            m = {"query": rng.choice(SEARCH_TERMS), "results": rng.randint(0, 250)}
        elif ev_name == "login":
            m = {"method": rng.choice(("password", "sso", "google", "apple"))}
        else:
            m = {}
        x = rng.random()
        if x < RATE_BAD_METADATA_JSON:
            return rng.choice(("{bad json", "not json at all", "{'product_id': 'PRD-1'}", '{"a": 1,}', "[1, 2"))
        if x < RATE_BAD_METADATA_JSON + RATE_METADATA_AS_STRING:
            return json.dumps(m)
        if x < RATE_BAD_METADATA_JSON + RATE_METADATA_AS_STRING + 0.03:
            return None
        return m

    def url(ev_name, meta):
        if ev_name in ("product_view", "add_to_cart") and isinstance(meta, dict) and "product_id" in meta:
            return f"{SHOP}/p/{meta['product_id']}"
        return SHOP + {"page_view": rng.choice(("/", "/deals", "/c/electronics", "/c/home", "/blog/gift-guide")),
                       "search": "/search?q=" + rng.choice(SEARCH_TERMS).replace(" ", "+"),
                       "checkout": "/checkout", "purchase": "/checkout/confirmation", "login": "/account/login",
                       "logout": "/account/logout"}.get(ev_name, "/")

    for d in range(days):
        out = []
        n_cust, n_prod = max(1, ctx.customers_cum[d]), max(1, ctx.products_cum[d])
        while len(out) < quotas[d]:
            anon = rng.random() < RATE_ANONYMOUS
            cust = None if anon else f"CUS-{rng.randint(1, n_cust):07d}"
            sess = f"sess-{rng.getrandbits(48):012x}"
            device = _weighted(rng, (("mobile", 0.55), ("desktop", 0.38), ("tablet", 0.07)))
            geo = _weighted(rng, countries)
            sec = ctx.rand_sec(rng, d)
            n_ev = min(quotas[d] - len(out), 1 + int(rng.expovariate(0.35)))
            names = []
            if not anon and rng.random() < 0.3:
                names.append("login")
            while len(names) < n_ev:
                names.append(_weighted(rng, EVENT_WEIGHTS))
            if not anon and n_ev > 2 and rng.random() < 0.2:
                names[-1] = "logout"
            names = names[:n_ev]
            prev_url = rng.choice(REFERRERS)
            for ev_name in names:
                meta = metadata(ev_name, n_prod)
                u1 = url(ev_name, meta)
                ev = {"event_id": _uuid(rng), "customer_id": cust, "event_name": ev_name,
                      "event_ts": _fmt_ts(rng, sec, rng.randrange(1000)), "session_id": sess, "device": device,
                      "geo": geo, "url_1": u1, "url_2": prev_url, "metadata": meta}
                prev_url = u1
                sec += rng.randint(2, 240)
                x = rng.random
                if x() < RATE_NULL_KEY:
                    ev["event_id"] = rng.choice(NULL_LIKE)
                if x() < RATE_NULL_REQUIRED:
                    ev[rng.choice(("event_name", "event_ts"))] = rng.choice(NULL_LIKE)
                if x() < RATE_BAD_TIMESTAMP:
                    ev["event_ts"] = rng.choice(BAD_TIMESTAMPS)
                if x() < RATE_MIXED_CASE_CODE:
                    k = rng.choice(("event_name", "device", "geo"))
                    if ev[k]:
                        ev[k] = _messy_code(rng, ev[k])
                if x() < RATE_INVALID_VALUE:
                    ev["event_name"] = rng.choice(INVALID_EVENT_NAMES)
                if ev["customer_id"] and x() < RATE_ORPHAN:
                    ev["customer_id"] = _orphan_id(rng, "CUS", 7)
                if ev["customer_id"] and x() < RATE_PADDED_ID:
                    ev["customer_id"] = _pad(rng, ev["customer_id"])
                if x() < RATE_EMPTY_OR_PADDED:
                    k = rng.choice(("url_1", "url_2", "session_id"))
                    ev[k] = rng.choice(("", "  ")) if not ev[k] or rng.random() < 0.5 else _pad(rng, ev[k])
                if SCHEMA_DRIFT and x() < RATE_EXTRA_JSON_KEY:
                    ev["experiment"] = rng.choice(("checkout_v2", "reco_b", "control"))
                for k in ("customer_id", "url_2", "metadata"):
                    if k in ev and ev[k] is None and x() < RATE_OMIT_NULL_KEY:
                        del ev[k]
                if d < days - 1 and ev["event_id"] and x() < RATE_EVENT_KEY_REUSE:
                    w.ties.add(ev["event_id"].strip())
                    ev2 = dict(ev, device="desktop" if ev["device"] != "desktop" else "mobile")
                    reused[rng.randint(d + 1, days - 1)].append(ev2)
                out.append(ev)
        out.extend(reused[d])
        w.write_day(d, out)
    ctx.done(w)


# --------------------------------------------------------------------------------------
# fx/rates
# --------------------------------------------------------------------------------------
FX_SPEC = _Spec(FX_COLS, key=("rate_date", "quote_ccy"), required=("base_ccy", "rate", "as_of_ts"),
                text=("source",), dates=("rate_date",), timestamps=("as_of_ts",), numbers=("rate",),
                codes=("base_ccy", "quote_ccy"))
FX_SOURCES = ("ECB", "ECB", "ECB", "OXR", "BLOOMBERG")


def _gen_rates(ctx: _Ctx) -> None:
    name = "rates"
    rng = ctx.rng(name)
    days = ctx.days
    w = _Writer(ctx, name)
    as_of: dict[tuple[int, str], int] = {}      # (fx day index, ccy) -> as_of seconds of the delivered version
    touched: set = set()                         # (fx day index, ccy) already corrected or tied (membership only)
    fx_day0 = (ctx.start - ctx.fx_first).days  # fx index of the start date
    main_ccys = list(FX_BASE_RATES)
    epoch_fx0 = ctx.day_start[0] - fx_day0 * DAY_SECONDS

    def row(i, ccy, rate, as_sec, source=None):
        rd = ctx.fx_first + timedelta(days=i)
        r = [rd.isoformat(), "USD", ccy, _fmt_rate(rate), source or rng.choice(FX_SOURCES),
             _fmt_ts(rng, as_sec, rng.randrange(1000))]
        _mutate(rng, r, FX_SPEC)
        x = rng.random
        if x() < RATE_INVALID_VALUE:
            r[3] = rng.choice(("0", "-1.25", "0.000000", "-0.5"))
        if x() < RATE_INVALID_VALUE:
            r[1] = rng.choice(INVALID_BASE_CCY)
        if x() < RATE_INVALID_VALUE:
            r[2] = rng.choice(INVALID_QUOTE_CCY)
        return r

    def original(i, ccy):
        sec = epoch_fx0 + i * DAY_SECONDS + 16 * 3600 + rng.randrange(0, 1800)
        as_of[(i, ccy)] = sec
        return row(i, ccy, ctx.fx.series[ccy][i], sec)

    for d in range(days):
        rows = []
        di = fx_day0 + d
        if d == 0:
            for i in range(0, fx_day0 + 1):
                for ccy in main_ccys:
                    if i != fx_day0 and i > 0 and rng.random() < RATE_FX_GAP:
                        continue
                    rows.append(original(i, ccy))
        else:
            for ccy in main_ccys:
                rows.append(original(di, ccy))
            # corrections (newer as_of_ts for a recent date), stale and tie rows
            for _ in range(FX_CORRECTIONS_PER_DAY):
                ccy = rng.choice(main_ccys)
                i = di - rng.randint(1, 5)
                if (i, ccy) in as_of:
                    touched.add((i, ccy))
                    sec = ctx.day_start[d] + rng.randrange(6 * 3600, 12 * 3600)
                    rows.append(row(i, ccy, ctx.fx.series[ccy][i] * rng.uniform(0.995, 1.005), sec, "ECB-CORR"))
                    as_of[(i, ccy)] = sec
            for _ in range(FX_STALE_PER_DAY):
                ccy = rng.choice(main_ccys)
                i = di - rng.randint(1, 30)
                if (i, ccy) in as_of:
                    sec = as_of[(i, ccy)] - rng.randint(3600, 5 * 3600)
                    rows.append(row(i, ccy, ctx.fx.series[ccy][i] * 1.1, sec, "OXR"))
            for _ in range(FX_TIES_PER_DAY):
                # tie on a history date (delivered only in the day-0 file) never corrected nor tied before
                ccy = rng.choice(main_ccys)
                i = fx_day0 - rng.randint(6, 40)
                k = f"{(ctx.fx_first + timedelta(days=i)).isoformat()}|{ccy}"
                if (i, ccy) in as_of and (i, ccy) not in touched:
                    touched.add((i, ccy))
                    w.ties.add(k)
                    rows.append(row(i, ccy, ctx.fx.series[ccy][i] * 1.001, as_of[(i, ccy)], "BLOOMBERG"))
        if d >= ctx.late_fx_day:                 # late currency: history starts here
            rows.append(original(di, LATE_FX_CURRENCY))
        w.write_day(d, rows)
    ctx.done(w)


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------
def generate(out_dir: str | Path, days: int = DEFAULT_DAYS, seed: int = DEFAULT_SEED, scale: float = DEFAULT_SCALE,
             start_date: date | None = None) -> dict:
    """Write the landing zone under out_dir; return {dataset: records written (anomalies included)}."""
    if days < 1:
        raise ValueError("days must be >= 1")
    if scale <= 0:
        raise ValueError("scale must be > 0")
    ctx = _Ctx(Path(out_dir), int(days), int(seed), float(scale), start_date or DEFAULT_START_DATE)
    ctx.out.mkdir(parents=True, exist_ok=True)
    _gen_accounts(ctx)
    _gen_contacts(ctx)
    _gen_opportunities(ctx)
    _gen_customers(ctx)
    _gen_products(ctx)
    _gen_orders_and_events(ctx)
    _gen_behavior(ctx)
    _gen_rates(ctx)
    order = list(DATASETS)
    generate.last_file_counts = {k: ctx.nfiles[k] for k in order}   # type: ignore[attr-defined]
    return {k: ctx.totals[k] for k in order}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m etl_assets.sample_data",
                                description="Generate a deterministic sample landing zone with injected anomalies.")
    p.add_argument("--out", required=True, help="landing zone root folder")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--scale", type=float, default=DEFAULT_SCALE)
    p.add_argument("--start-date", type=date.fromisoformat, default=None,
                   help=f"first dt (YYYY-MM-DD), default {DEFAULT_START_DATE.isoformat()}")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    summary = generate(a.out, days=a.days, seed=a.seed, scale=a.scale, start_date=a.start_date)
    files = getattr(generate, "last_file_counts", {})
    for k, v in summary.items():
        system, folder, fmt, _ = DATASETS[k]
        print(f"{system + '/' + folder:<22} {fmt:<8} {v:>10,} records {files.get(k, 0):>4} files")
    print(f"total {sum(summary.values()):,} records in {time.perf_counter() - t0:.1f}s -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
