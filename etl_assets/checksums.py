"""Row checksums of every lake table: ``python -m etl_assets.checksums --lake DIR [--decrypt]``.

Prints JSON ``{"tables": {"<layer>/<table>": {"rows": n, "checksum": "<sha256>"}, ...}, ...}``
for every published table, so two states of the lake (for example before a disaster and after
``make rebuild``) can be compared table by table. pyarrow only, no Spark.

A table's checksum is the SHA-256 of its **sorted multiset of row hashes**: each row's
non-volatile columns, by name, as canonical JSON (decimals with their scale, timestamps in ISO
form), hashed with SHA-256. Row order and file layout (how many Parquet files, which partitioning
Spark chose) therefore do not matter; every value of every other column does.

Volatile columns (excluded, because a correct rebuild legitimately changes them):

- ``_ingested_at``, ``_run_id`` (bronze, and carried to silver/quarantine): when and by which run
  a row was ingested -- a rebuild from landing ingests again.
- ``gold/dq_scorecard``: ``run_id``, ``checked_at`` -- the run that wrote the row and when.
- ``*_enc`` (AES-GCM ciphertext of PII): every encryption draws a fresh random IV, so the same
  value encrypts differently on every run. With ``--decrypt`` (key from ``ETL_PII_KEY``, never on
  the command line) the *plaintext* is compared instead, so quarantined PII is covered too;
  without it these columns are excluded (and listed in the output).
- ``gold/audit_log`` is not checksummed at all: it is append-only by design, a rebuild appends
  its own rows (and must not reproduce the old ones).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from pathlib import Path


LAYERS = ("bronze", "silver", "quarantine", "gold")
VOLATILE = {"_ingested_at", "_run_id"}
VOLATILE_PER_TABLE = {"gold/dq_scorecard": {"run_id", "checked_at"}}
EXCLUDED_TABLES = {"gold/audit_log"}


def _decryptor(key: str):
    """Decrypt Spark's ``base64(aes_encrypt(v, key, 'GCM'))``: 12-byte IV + ciphertext + tag."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as e:  # pragma: no cover
        raise SystemExit("--decrypt needs the 'cryptography' package (pip install cryptography)") from e
    aes = AESGCM(key.encode("ascii"))

    def decrypt(value: str | None) -> str | None:
        if value is None:
            return None
        raw = base64.b64decode(value)
        return aes.decrypt(raw[:12], raw[12:], None).decode("utf-8")

    return decrypt


def _canonical(value):
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # Decimal (keeps its scale), date, datetime


def volatile_columns(table: str, columns: list[str], decrypt: bool) -> list[str]:
    out = [c for c in columns if c in VOLATILE or c in VOLATILE_PER_TABLE.get(table, set())]
    if not decrypt:
        out += [c for c in columns if c.endswith("_enc")]
    return sorted(out)


def table_checksum(data, table: str, decrypt=None) -> dict:
    """``{"rows", "checksum", "volatile"}`` of a table's rows (a pyarrow Table)."""
    skip = set(volatile_columns(table, data.column_names, decrypt is not None))
    keep = sorted(c for c in data.column_names if c not in skip)
    columns = {c: data.column(c).to_pylist() for c in keep}
    if decrypt is not None:
        for c in keep:
            if c.endswith("_enc"):
                columns[c] = [decrypt(v) for v in columns[c]]
    hashes = []
    for i in range(data.num_rows):
        row = {c: _canonical(columns[c][i]) for c in keep}
        text = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        hashes.append(hashlib.sha256(text.encode("utf-8")).digest())
    total = hashlib.sha256()
    for h in sorted(hashes):
        total.update(h)
    return {"rows": data.num_rows, "checksum": total.hexdigest(), "volatile": sorted(skip)}


def lake_checksums(root: str | Path, decrypt_key: str | None = None) -> dict:
    from etl_assets.lake import Lake

    lake = Lake(str(root))
    decrypt = _decryptor(decrypt_key) if decrypt_key else None
    tables = {}
    for layer, name in lake.tables():
        table = f"{layer}/{name}"
        if layer not in LAYERS or table in EXCLUDED_TABLES:
            continue
        tables[table] = table_checksum(lake.arrow(layer, name), table, decrypt)
    return {
        "lake": str(lake.root),
        "decrypted": decrypt is not None,
        "excluded_tables": sorted(EXCLUDED_TABLES),
        "tables": tables,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lake", required=True, help="lake root folder (or file:// URI)")
    ap.add_argument("--decrypt", action="store_true",
                    help="compare *_enc columns by plaintext, with the AES key from ETL_PII_KEY")
    args = ap.parse_args(argv)
    from etl_assets.storage import parse_uri

    root = Path(parse_uri(args.lake)[1])
    if not root.is_dir():
        print(f"--lake {args.lake}: no such folder", file=sys.stderr)
        return 2
    key = None
    if args.decrypt:
        key = os.environ.get("ETL_PII_KEY", "")
        if not key:
            print("--decrypt needs ETL_PII_KEY in the environment", file=sys.stderr)
            return 2
    json.dump(lake_checksums(root, key), sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
