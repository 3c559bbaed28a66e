"""The lake: Parquet tables under ``<lake>/<layer>/<table>/`` published atomically, one writer at a time.

**Atomic publish.** A table is written completely into ``<lake>/_staging/...`` first. Publishing
then swaps the staged folder with the live one in one ``renameat2(RENAME_EXCHANGE)`` system
call, so a reader listing ``<lake>/<layer>/<table>/`` sees the previous complete version or the
new complete version, never a mix, and a run killed at any moment leaves the previous version in
place. Left-over staging folders of killed runs are removed by the next publish of the table.

**Staged, checked, then published** (``Lake.transaction``): the staged version exists before
anyone can read it, so the quality gate runs on it (``checks.PublishCheck``); the block swaps the
tables in only if it ends without an exception, and removes the staged folders otherwise.

**Tables published together** (``publish_many``: a dataset's silver and quarantine, whose row
counts must add up with bronze's) are all staged first; then a journal naming the staged folders
is written (``_staging/_txn/<id>.json``, fsynced) before the exchanges and removed after them. A
run killed between two exchanges leaves the journal behind, and the next publish (or
``Lake.recover()``) rolls the transaction forward, so silver and quarantine are always from the
same run once anyone writes again.

**Locks** (``Lake.step_lock``). Every asset step takes, before it reads anything, an exclusive
``flock`` on each table it writes and a shared one on each table it reads, in one global order
(so two steps can never deadlock), and keeps them until it has published. So two runs on one
lake never interleave writes on a table, and a step never reads a table while another run swaps
it. A step that cannot get its locks waits (logging who holds them) up to
``ETL_LAKE_LOCK_TIMEOUT_S`` seconds (default 1800) and then fails with a message naming the
table and the holder. ``flock`` locks die with their process, so a killed run never leaves a
stale lock. They need a local or POSIX-locking shared file system (NFSv4, EFS).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from pyspark.sql import DataFrame, SparkSession

from etl_assets.storage import parse_uri

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
MARKER = "_PUBLISHED"  # in every published version: the transaction that published it


class LakeLockTimeout(TimeoutError):
    """A table stayed locked by another run for longer than the timeout."""


def _exchange(a: str, b: str) -> None:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE)."""
    rc = _libc.renameat2(_AT_FDCWD, a.encode(), _AT_FDCWD, b.encode(), _RENAME_EXCHANGE)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"renameat2({a!r}, {b!r}) failed: {os.strerror(err)}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> int:
    """Replace ``path`` atomically and durably (temp file, fsync, rename, fsync of the folder);
    returns the bytes written. Readers see the old or the new content, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    data = text.encode("utf-8")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return len(data)


@dataclass(frozen=True)
class Write:
    df: DataFrame
    layer: str
    table: str
    partition_by: tuple[str, ...] = ()
    # prepare(staged_dir), when given, runs after the write and before the exchange: it may
    # rearrange the staged folder (bronze adds hard links to the files it keeps, see
    # etl_assets/ingest.py); what it returns is added to the stats
    prepare: Callable[[Path], dict | None] | None = None


@dataclass
class Staged:
    """The staged folders of one ``Lake.transaction`` (in the order of its writes) and their file stats."""

    txn: str
    paths: list[Path]
    stats: list[dict]


class Lake:
    def __init__(self, uri: str, owner: str | None = None):
        scheme, location = parse_uri(uri)
        if scheme != "file":
            raise ValueError(
                f"ETL_LAKE_URI={uri!r}: this build publishes to a local or mounted lake folder; "
                "see README 'Environments' for S3"
            )
        self.root = Path(location)
        self.owner = owner or f"pid {os.getpid()}"  # who holds our locks (a run id, when known)
        self._held: dict[tuple[str, str], int] = {}  # locks this process holds, table -> mode

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

    # ------------------------------------------------------------------ locks
    def _lock_path(self, layer: str, table: str) -> Path:
        return self.root / "_locks" / layer / f"{table}.lock"

    @contextlib.contextmanager
    def step_lock(
        self,
        writes: list[tuple[str, str]] = (),
        reads: list[tuple[str, str]] = (),
        timeout_s: float | None = None,
        logger=log,
        owner: str | None = None,
    ):
        """Hold exclusive locks on ``writes`` and shared locks on ``reads`` (``(layer, table)``);
        ``owner`` (e.g. the run id) is shown to runs that wait for them."""
        if owner:
            self.owner = owner
        if timeout_s is None:
            timeout_s = float(os.environ.get("ETL_LAKE_LOCK_TIMEOUT_S", "1800"))
        modes = {tuple(t): fcntl.LOCK_SH for t in reads}
        modes.update({tuple(t): fcntl.LOCK_EX for t in writes})
        for t, mode in modes.items():
            if t in self._held and self._held[t] != mode:
                raise RuntimeError(f"{'/'.join(t)} is already locked by this process in another mode")
        modes = {t: m for t, m in modes.items() if t not in self._held}  # re-entrant
        fds: list[tuple[tuple[str, str], int]] = []
        try:
            for table in sorted(modes):  # one global order: no deadlock between steps
                fds.append((table, self._acquire(table, modes[table], timeout_s, logger)))
                self._held[table] = modes[table]
            yield
        finally:
            for table, fd in reversed(fds):
                self._held.pop(table, None)
                os.close(fd)  # closing the descriptor releases the flock

    def _acquire(self, table: tuple[str, str], mode: int, timeout_s: float, logger) -> int:
        path = self._lock_path(*table)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        name = "/".join(table)
        start = time.monotonic()
        next_log = start
        try:
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                now = time.monotonic()
                holder = self._holder(path)
                if now - start >= timeout_s:
                    raise LakeLockTimeout(
                        f"{name} in lake {self.root} is locked by another run ({holder}) for more "
                        f"than {timeout_s:.0f}s (ETL_LAKE_LOCK_TIMEOUT_S); not reading or writing it"
                    )
                if now >= next_log:
                    logger.warning(f"waiting for {name}: locked by {holder}")
                    next_log = now + 30
                time.sleep(0.2)
            if mode == fcntl.LOCK_EX:
                info = {"owner": self.owner, "pid": os.getpid(), "host": socket.gethostname(),
                        "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _holder(path: Path) -> str:
        try:
            info = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "a reader"
        return f"{info.get('owner')}, pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"

    # ---------------------------------------------------------------- publish
    def _staging_dir(self, layer: str, table: str) -> Path:
        return self.root / "_staging" / layer / table

    @property
    def _txn_dir(self) -> Path:
        return self.root / "_staging" / "_txn"

    def publish(
        self,
        df: DataFrame,
        layer: str,
        table: str,
        partition_by: list[str] | None = None,
        prepare: Callable[[Path], dict | None] | None = None,
    ) -> dict:
        """Write ``df`` as the new version of ``<layer>/<table>``; returns file stats (of the files
        ``df`` was written to, plus what ``prepare`` returns; see ``Write``)."""
        return self.publish_many([Write(df, layer, table, tuple(partition_by or ()), prepare)])[0]

    def publish_many(self, writes: list[Write]) -> list[dict]:
        """Stage every table, then swap them all in (rolled forward after a crash); file stats."""
        with self.transaction(writes) as staged:
            pass
        return staged.stats

    @contextlib.contextmanager
    def transaction(self, writes: list[Write]):
        """Stage every table on entry and yield the ``Staged`` folders (not visible to readers);
        swap them all in when the block ends without an exception, and remove them when it raises
        (a failed quality gate: nothing is published, readers keep the previous version).

        Takes the tables' exclusive locks unless this process holds them already (``step_lock``)."""
        tables = [(w.layer, w.table) for w in writes]
        with self.step_lock(writes=tables):
            self._recover_locked(set(tables))
            staged = Staged(f"{int(time.time())}-{uuid.uuid4().hex[:12]}", [], [])
            try:
                self._stage(writes, staged)
                yield staged
            except BaseException:
                for path in staged.paths:
                    shutil.rmtree(path, ignore_errors=True)
                raise
            self._commit(writes, staged)

    def _stage(self, writes: list[Write], staged: Staged) -> None:
        txn = staged.txn
        for w in writes:
            parent = self._staging_dir(w.layer, w.table)
            parent.mkdir(parents=True, exist_ok=True)
            self._clean_leftovers(parent)
            path = parent / txn
            staged.paths.append(path)  # removed if this write fails
            writer = w.df.write.mode("overwrite").option("compression", "snappy")
            if w.partition_by:
                writer = writer.partitionBy(*w.partition_by)
            writer.parquet(str(path))
            st = self._stats(path)
            if w.prepare is not None:
                st.update(w.prepare(path) or {})
            (path / MARKER).write_text(txn)
            staged.stats.append(st)

    def _commit(self, writes: list[Write], staged: Staged) -> None:
        txn = staged.txn
        journal = None
        if len(writes) > 1:
            self._txn_dir.mkdir(parents=True, exist_ok=True)
            journal = self._txn_dir / f"{txn}.json"
            write_durably(journal, json.dumps(
                {"txn": txn, "tables": [[w.layer, w.table, str(p)] for w, p in zip(writes, staged.paths)]}))
        for w, path in zip(writes, staged.paths):
            self._swap_in(path, self.root / w.layer / w.table)
        if journal is not None:
            journal.unlink()

    @staticmethod
    def _swap_in(staged: Path, live: Path) -> None:
        live.parent.mkdir(parents=True, exist_ok=True)
        if live.exists():
            _exchange(str(staged), str(live))
            shutil.rmtree(staged, ignore_errors=True)  # now the previous version
        else:
            os.rename(staged, live)

    def _journals(self) -> list[tuple[Path, dict]]:
        out = []
        if self._txn_dir.is_dir():
            for journal in sorted(self._txn_dir.glob("*.json")):
                with contextlib.suppress(OSError, ValueError):
                    out.append((journal, json.loads(journal.read_text())))
        return out

    def recover(self, logger=log) -> int:
        """Roll forward the multi-table publishes that killed runs left half done (skipping any
        whose tables a live run holds); returns how many were completed."""
        done = 0
        for _, spec in self._journals():
            tables = {(layer, table) for layer, table, _ in spec["tables"]}
            try:
                with self.step_lock(writes=sorted(tables), timeout_s=0):
                    done += self._recover_locked(tables, logger)
            except LakeLockTimeout:
                continue
        return done

    def _recover_locked(self, tables: set[tuple[str, str]], logger=log) -> int:
        """Roll forward the journals whose tables are all in ``tables`` (exclusively locked by us)."""
        done = 0
        for journal, spec in self._journals():
            if not {(layer, table) for layer, table, _ in spec["tables"]} <= tables:
                continue
            txn = spec["txn"]
            for layer, table, staged in spec["tables"]:
                live, staged = self.root / layer / table, Path(staged)
                live_txn = (live / MARKER).read_text() if (live / MARKER).exists() else None
                if live_txn != txn and (staged / MARKER).exists() and (staged / MARKER).read_text() == txn:
                    logger.warning(f"{layer}/{table}: completing publish {txn} of a run that was killed")
                    self._swap_in(staged, live)
            journal.unlink(missing_ok=True)
            done += 1
        return done

    def _clean_leftovers(self, staging_parent: Path) -> None:
        # Staging folders are private to one publish, and the caller holds the table's exclusive
        # lock: any folder here is from a killed run -- unless a journal still names it.
        pending = {t[2] for _, spec in self._journals() for t in spec["tables"]}
        for d in staging_parent.iterdir():
            if str(d) not in pending:
                shutil.rmtree(d, ignore_errors=True)

    @staticmethod
    def _stats(folder: Path) -> dict:
        files = [f for f in folder.rglob("*.parquet")]
        return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}
