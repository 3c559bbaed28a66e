"""The lake: Parquet tables under ``<lake>/<layer>/<table>/`` published atomically.

A table is written completely into ``<lake>/_staging/...`` first. Publishing then swaps the
staged folder with the live one in one ``renameat2(RENAME_EXCHANGE)`` system call, so a reader
listing ``<lake>/<layer>/<table>/`` sees the previous complete version or the new complete
version, never a mix, and a run killed at any moment leaves the previous version in place.
Left-over staging folders of killed runs are removed by later publishes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

from pyspark.sql import DataFrame, SparkSession

from etl_assets.storage import parse_uri

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> None:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE)."""
    rc = _libc.renameat2(_AT_FDCWD, a.encode(), _AT_FDCWD, b.encode(), _RENAME_EXCHANGE)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"renameat2({a!r}, {b!r}) failed: {os.strerror(err)}")


class Lake:
    def __init__(self, uri: str):
        scheme, location = parse_uri(uri)
        if scheme != "file":
            raise ValueError(
                f"ETL_LAKE_URI={uri!r}: this build publishes to a local or mounted lake folder; "
                "see README 'Environments' for S3"
            )
        self.root = Path(location)

    def path(self, layer: str, table: str) -> str:
        return str(self.root / layer / table)

    def exists(self, layer: str, table: str) -> bool:
        return (self.root / layer / table).is_dir()

    def read(self, spark: SparkSession, layer: str, table: str) -> DataFrame:
        if not self.exists(layer, table):
            raise FileNotFoundError(
                f"table {layer}/{table} has not been published yet under {self.root}; "
                f"materialize {layer}/{table} first"
            )
        return spark.read.parquet(self.path(layer, table))

    def _staging_dir(self, layer: str, table: str) -> Path:
        return self.root / "_staging" / layer / table

    def publish(
        self,
        df: DataFrame,
        layer: str,
        table: str,
        partition_by: list[str] | None = None,
        prepare: Callable[[Path], dict | None] | None = None,
    ) -> dict:
        """Write ``df`` as the new version of ``<layer>/<table>``; returns file stats (of the
        files ``df`` was written to).

        ``prepare(staged_dir)``, when given, runs after the write and before the exchange: it may
        rearrange the staged folder (bronze adds hard links to the files it keeps, see
        ``etl_assets/ingest.py``); what it returns is added to the stats."""
        staging_parent = self._staging_dir(layer, table)
        staging_parent.mkdir(parents=True, exist_ok=True)
        self._clean_leftovers(staging_parent)
        staged = staging_parent / f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        writer = df.write.mode("overwrite").option("compression", "snappy")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(str(staged))
        stats = self._stats(staged)
        if prepare is not None:
            stats.update(prepare(staged) or {})
        live = self.root / layer / table
        live.parent.mkdir(parents=True, exist_ok=True)
        if live.exists():
            _exchange(str(staged), str(live))
            shutil.rmtree(staged, ignore_errors=True)  # now the previous version
        else:
            os.rename(staged, live)
        return stats

    @staticmethod
    def _clean_leftovers(staging_parent: Path, older_than_s: float = 0) -> None:
        # Staging folders are private to one publish; a left-over one is from a killed run.
        # Concurrent writers of one table are prevented by the run lock (see lake_lock).
        for d in staging_parent.iterdir():
            if time.time() - d.stat().st_mtime >= older_than_s:
                shutil.rmtree(d, ignore_errors=True)

    @staticmethod
    def _stats(folder: Path) -> dict:
        files = [f for f in folder.rglob("*.parquet")]
        return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}
