"""Print what a run published: rows per table, quarantined rows per reason, wall time.

``python -m etl_assets.summary --lake DIR [--started EPOCH_SECONDS]``. Reads the Delta tables
with ``deltalake`` only, so it is quick and needs no Spark.
"""

from __future__ import annotations

import argparse
import collections
import time

from etl_assets.lake import Lake
from etl_assets.registry import DATASETS, GOLD_TABLES


def table_rows(lake: Lake, layer: str, table: str) -> int | None:
    return lake.rows(layer, table) if lake.exists(layer, table) else None


def quarantine_reasons(lake: Lake, table: str) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    if not lake.exists("quarantine", table):
        return counts
    for reasons in lake.arrow("quarantine", table, columns=["_reasons"]).column("_reasons").to_pylist():
        counts.update(reasons or [])
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lake", required=True)
    ap.add_argument("--started", type=float, default=None, help="epoch seconds when the run started")
    args = ap.parse_args(argv)
    root = Lake(args.lake)
    print(f"\nPublished tables under {root.root}")
    print(f"{'table':<36}{'rows':>12}")
    for layer in ("bronze", "silver", "quarantine"):
        for ds in DATASETS:
            n = table_rows(root, layer, ds.name)
            print(f"{layer + '/' + ds.name:<36}{'-' if n is None else n:>12}")
    for t in (*GOLD_TABLES, "dq_scorecard"):
        n = table_rows(root, "gold", t)
        print(f"{'gold/' + t:<36}{'-' if n is None else n:>12}")
    print("\nQuarantined rows per reason (a row counts once per reason)")
    for ds in DATASETS:
        reasons = quarantine_reasons(root, ds.name)
        if reasons:
            listed = ", ".join(f"{r}={n}" for r, n in sorted(reasons.items()))
            print(f"  {ds.name:<14} {listed}")
    if args.started:
        print(f"\nwall time: {time.time() - args.started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
