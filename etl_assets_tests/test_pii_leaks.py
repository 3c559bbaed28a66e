"""Secrets and PII never leak: after a real ``etl_all`` run (the session's ``lake_run``: tiny
generated data, a distinctive salt and key from the environment, an on-disk Dagster instance),
neither the salt, nor the key, nor a raw email, name or phone number of the landed data appears

- in any file under DAGSTER_HOME (event log and run storage SQLite, compute logs, ...),
- in the JSON-lines alert log,
- in the lake's bookkeeping (``_ingest`` logs, ``_publish``) and every table's ``_delta_log``,
- in any string value of any silver, quarantine or gold table (read with pyarrow).

The scanners are checked against planted values (and against bronze, which by contract holds the
raw values), so a scanner that finds nothing cannot make the test pass.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
import pyarrow.parquet as pq
import pytest

from etl_assets.registry import DATASETS

PII_DATASETS = [ds for ds in DATASETS if ds.has_pii]
# a cell is split into tokens on these (never on base64 characters: ciphertext stays one token)
TOKEN_SPLIT = re.compile(r"[\s,;\"'{}\[\]:()<>|]+")
SAMPLE = 300


# -- what to look for ---------------------------------------------------------------------------


def landed_pii(landing: Path) -> dict[str, set[str]]:
    """Raw PII values of the landed CSV files: emails (as delivered, trimmed, lowercased), names,
    phone numbers, and "first last" / "first,last" pairs."""
    emails, names, phones, pairs = set(), set(), set(), set()
    for ds in PII_DATASETS:
        pii_cols = {c.name: c.pii for c in ds.columns if c.pii}
        for f in sorted((landing / ds.landing_prefix).rglob(f"*{ds.ext}")):
            with open(f, newline="", encoding="utf-8-sig", errors="replace") as fh:
                for row in csv.DictReader(fh):
                    for col, kind in pii_cols.items():
                        v = (row.get(col) or "").strip()
                        if not v or not isinstance(v, str):
                            continue
                        if kind == "email" and "@" in v and len(v) >= 6:
                            emails |= {v, v.lower()}
                        elif col == "phone" and sum(ch.isdigit() for ch in v) >= 7:
                            phones.add(v)
                        elif col in ("first_name", "last_name") and len(v) >= 3:
                            names.add(v)
                    first, last = (row.get("first_name") or "").strip(), (row.get("last_name") or "").strip()
                    if len(first) >= 3 and len(last) >= 3:
                        pairs |= {f"{first} {last}", f"{first},{last}"}
    return {"emails": emails, "names": names, "phones": phones, "pairs": pairs}


def sample(values: set[str], n: int = SAMPLE) -> list[str]:
    return sorted(values)[:: max(1, len(values) // n)][:n] if len(values) > n else sorted(values)


def needles(secrets: list[str], pii: dict[str, set[str]]) -> dict[str, str]:
    """Substring needles for free text (logs, SQLite, JSON) -> what they are. Single names are
    looked for quoted (a JSON/metadata value), pairs as a raw CSV line or a full name would hold
    them; each also in its JSON-escaped form (the event log writes ASCII-escaped JSON)."""
    out = {s: "secret" for s in secrets}
    for kind in ("emails", "phones", "pairs"):
        for v in sample(pii[kind]):
            out[v] = kind
    for v in sorted(pii["names"]):
        out[json.dumps(v, ensure_ascii=False)] = "names"
    for v, kind in list(out.items()):
        escaped = json.dumps(v)[1:-1]
        if escaped != v:
            out[escaped] = kind
    return out


# -- scanners -----------------------------------------------------------------------------------


def scan_text_files(paths: list[Path], found_in: dict[str, str]) -> list[str]:
    """Every (file, needle kind, needle) where a needle occurs in a file's bytes (UTF-8 decoded;
    emails also matched case-insensitively)."""
    hits = []
    lowered = {n.lower(): k for n, k in found_in.items() if k == "emails"}
    for p in paths:
        text = p.read_bytes().decode("utf-8", errors="replace")
        lower = text.lower()
        for n, kind in found_in.items():
            if n in text:
                hits.append(f"{p}: {kind} {n!r}")
        for n, kind in lowered.items():
            if n in lower:
                hits.append(f"{p}: {kind} {n!r} (case-insensitive)")
    return hits


def _strings(column: pa.ChunkedArray) -> list[str]:
    t = column.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return [v for v in column.to_pylist() if v is not None]
    if pa.types.is_list(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        return [x for v in column.to_pylist() if v for x in v if x is not None]
    return []


#: company names, not people's: "Wang, Silva & Co" holds surnames by design, so a single surname is
#: no leak there (a person's full "first last" name still is: ``pairs`` are scanned everywhere)
COMPANY_NAME_COLUMNS = {("accounts", "account_name")}


def scan_table(path: Path, secrets: list[str], pii: dict[str, set[str]]) -> list[str]:
    """Hits in every string (and array-of-string) column of a Parquet table: a secret, email or
    phone as a substring (emails case-insensitively), a name as a whole cell or token (not in a
    company-name column)."""
    table = DeltaTable(str(path)).to_pyarrow_dataset().to_table()
    substrings = set(secrets) | set(pii["emails"]) | set(pii["phones"]) | set(pii["pairs"])
    lowered = {e.lower() for e in pii["emails"]}
    names = pii["names"]
    hits = []
    for name in table.column_names:
        values = _strings(table.column(name))
        if not values:
            continue
        blob = "\n".join(values)
        low = blob.lower()
        hits += [f"{path.name}.{name}: {n!r}" for n in substrings if n in blob]
        hits += [f"{path.name}.{name}: {n!r} (case-insensitive)" for n in lowered if n in low]
        if (path.name, name) in COMPANY_NAME_COLUMNS:
            continue
        for v in values:
            cell = v.strip()
            tokens = {cell, *TOKEN_SPLIT.split(cell)}
            hits += [f"{path.name}.{name}: name {t!r} in {v[:80]!r}" for t in tokens & names]
    return hits


# -- the run and what it left behind -------------------------------------------------------------


@pytest.fixture(scope="module")
def run(lake_run):
    assert lake_run["result"].success
    pii = landed_pii(lake_run["landing"])
    assert len(pii["emails"]) > 50 and len(pii["names"]) > 20 and len(pii["phones"]) > 50 and pii["pairs"]
    return dict(lake_run, pii=pii, secrets=[lake_run["salt"], lake_run["key"]])


def test_scanners_find_planted_values(run, tmp_path):
    """The scanners are live: planted secrets and PII are found, in text and in Parquet; bronze
    (raw by contract) is found to hold raw PII of every kind."""
    pii, secrets = run["pii"], run["secrets"]
    email, phone, name = sample(pii["emails"])[0], sample(pii["phones"])[0], sorted(pii["names"])[0]
    log = tmp_path / "compute.err"
    log.write_text(f"INFO something {email.upper()} then key={secrets[1]}\n")
    meta = tmp_path / "event.json"
    meta.write_text(json.dumps({"value": name, "phone": phone}))  # ASCII-escaped like the event log
    needle = needles(secrets, pii)
    hits = scan_text_files([log, meta], needle)
    assert any("secret" in h for h in hits) and any("emails" in h for h in hits)
    assert any("names" in h for h in hits) and any("phones" in h for h in hits)
    table = tmp_path / "planted"
    write_deltalake(
        str(table),
        pa.table({"ok": ["fine", None], "leak": [f" {name} ", "x"], "arr": [["a"], [email.upper()]],
                  "salted": [f"v{secrets[0]}", None]}),
    )
    found = scan_table(table, secrets, pii)
    assert any(".leak: name" in h for h in found) and any(".arr:" in h for h in found)
    assert any(".salted:" in h for h in found) and not any(".ok:" in h for h in found)
    # ciphertext of a name is not a false positive: tokens are never split on base64 characters
    for ds in PII_DATASETS:
        bronze = scan_table(run["lake"] / "bronze" / ds.name, secrets, pii)
        for c in ds.columns:
            if c.pii:
                assert any(f".{c.name}:" in h for h in bronze), (ds.name, c.name)


def test_no_secret_or_pii_in_the_dagster_instance_or_alert_log(run):
    home = run["home"]
    files = [p for p in home.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert any(n.endswith(".db") for n in names), names  # SQLite event log / run storage on disk
    assert (home / "storage").is_dir() and any(p.suffix in (".out", ".err", ".complete") for p in files), \
        "no compute logs captured"
    alert_log = run["alert_log"]
    assert alert_log.is_file() and alert_log.read_text().strip(), "the alert sensor wrote no alert to scan"
    extra = [alert_log] + [p for p in (run["lake"] / "_ingest").rglob("*") if p.is_file()]
    hits = scan_text_files(files + extra, needles(run["secrets"], run["pii"]))
    assert not hits, "leaks:\n" + "\n".join(hits[:40])


def delta_log_texts(lake: Path, out: Path) -> list[Path]:
    """Every file of every ``_delta_log`` under the lake (commits, checksums, and checkpoints, the
    Parquet ones written out as JSON text to ``out``): Delta keeps file statistics there, and
    VACUUM never removes them."""
    files = []
    for log_dir in sorted(lake.rglob("_delta_log")):
        for p in sorted(log_dir.iterdir()):
            if p.suffix == ".parquet":
                text = out / f"{len(files)}-{p.name}.json"
                text.write_text(json.dumps(pq.read_table(p).to_pylist(), default=str))
                files.append(text)
            elif p.is_file():
                files.append(p)
    return files


def test_no_raw_pii_in_any_delta_log(run, tmp_path):
    """Bronze holds raw PII by design, but its statistics must not: they live in ``_delta_log``,
    which outlives VACUUM (and so an erasure)."""
    files = delta_log_texts(run["lake"], tmp_path)
    assert any("bronze/customers/_delta_log" in str(p) for p in files)
    assert any('"stats"' in p.read_text(errors="replace") for p in files if p.suffix == ".json")
    hits = scan_text_files(files, needles(run["secrets"], run["pii"]))
    assert not hits, "leaks:\n" + "\n".join(hits[:40])


@pytest.mark.parametrize("layer", ["silver", "quarantine", "gold"])
def test_no_secret_or_raw_pii_in_published_tables(run, layer):
    tables = sorted(p for p in (run["lake"] / layer).iterdir() if p.is_dir())
    assert len(tables) >= (6 if layer == "gold" else len(DATASETS))
    hits = []
    for t in tables:
        hits += scan_table(t, run["secrets"], run["pii"])
    assert not hits, "leaks:\n" + "\n".join(hits[:40])


def test_quarantined_pii_is_stored_encrypted_only(run):
    """Quarantine of a PII dataset has ``<col>_enc`` for every PII column and the malformed line,
    no readable PII column, and the ciphertext decrypts (with the run's key) to raw landed values."""
    import base64

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aes = AESGCM(run["key"].encode())
    decrypted = 0
    for ds in PII_DATASETS:
        table = DeltaTable(str(run["lake"] / "quarantine" / ds.name)).to_pyarrow_dataset().to_table()
        cols = set(table.column_names)
        for c in ds.columns:
            if c.pii:
                assert c.name not in cols and f"{c.name}_enc" in cols, (ds.name, c.name)
        assert "_corrupt_record" not in cols and "_corrupt_record_enc" in cols, ds.name
        for c in ds.columns:
            if c.pii == "email":
                for v in table.column(f"{c.name}_enc").to_pylist():
                    if v is not None:
                        raw = base64.b64decode(v)
                        plain = aes.decrypt(raw[:12], raw[12:], None).decode()
                        assert plain.strip() in run["pii"]["emails"] or "@" not in plain, plain
                        decrypted += 1
    assert decrypted > 0
