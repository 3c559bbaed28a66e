"""The landing zone behind one small interface: a local folder or an S3 prefix.

Discovery (listing landed files) and staging (making a landed file readable by Spark) go through
``LandingStore``; the bronze reader never knows which kind it has.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from etl_assets.registry import Dataset

DT_RE = re.compile(r"(?:^|/)dt=([0-9]{4}-[0-9]{2}-[0-9]{2})/")


class LandingError(Exception):
    """A landed file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class LandedFile:
    key: str  # path relative to the landing root, with forward slashes
    uri: str  # what lineage records as ``_source_file``
    size: int
    etag: str  # content version: S3 ETag, or mtime+size for a local file
    last_modified: float

    @property
    def dt(self) -> str | None:
        m = DT_RE.search("/" + self.key)
        return m.group(1) if m else None


def safe_key(key: str) -> bool:
    """A key is safe when it has no ``..``/``.``/empty segments and is not absolute."""
    if key.startswith("/") or "\\" in key or "\x00" in key:
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


def parse_uri(uri: str) -> tuple[str, str]:
    """``(scheme, location)``: ``('file', '/abs/path')`` or ``('s3', 'bucket/prefix')``."""
    if uri.startswith("s3://") or uri.startswith("s3a://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise ValueError(f"malformed S3 URI {uri!r}: no bucket")
        return "s3", (parsed.netloc + "/" + parsed.path.strip("/")).rstrip("/")
    if uri.startswith("file://"):
        return "file", os.path.abspath(urlparse(uri).path)
    if "://" in uri:
        raise ValueError(f"unsupported URI {uri!r}: use a folder, file:// or s3://")
    return "file", os.path.abspath(uri)


class StoreReadError(Exception):
    """The store could not serve a landed file's bytes (S3 kept failing, the object changed or
    vanished): the step fails and the next run retries the file. Deliberately not a
    ``LandingError`` (a bad file, rejected while the others go on)."""


class LandingStore:
    """Lists and stages landed files. Subclasses: ``LocalLandingStore``, ``S3LandingStore``."""

    root_uri: str

    def list_files(self, prefix: str = "") -> list[LandedFile]:
        raise NotImplementedError

    def local_path(self, f: LandedFile) -> str:
        """A local path Spark can read for this file (a staged copy for remote stores)."""
        raise NotImplementedError

    def spark_path(self, f: LandedFile) -> str:
        """What Spark reads for this file: ``local_path`` unless the store lets Spark read the
        remote object directly (``S3LandingStore`` with ``ETL_S3_READ_MODE=s3a``)."""
        return self.local_path(f)

    def prefetch(self, files) -> None:
        """Make ``files`` local ahead of reading them (remote stores stage them in parallel)."""

    def release(self, files=None) -> None:
        """Drop local copies made for ``files`` (all when None) once they have been read."""

    def head(self, f: LandedFile, nbytes: int = 1 << 20) -> bytes:
        """The first ``nbytes`` of a landed file (a CSV header, a first JSON line)."""
        with open(self.local_path(f), "rb") as fh:
            return fh.read(nbytes)

    def open_binary(self, f: LandedFile):
        """A seekable binary file for reading a landed file in place (a Parquet footer)."""
        return open(self.local_path(f), "rb")

    def _refuse(self, key: str, uri: str, why: str) -> None:
        """Record a listed entry that is never read (an unsafe key, a link, a special file)."""
        if not hasattr(self, "_refused"):
            self._refused: dict[str, tuple[str, str]] = {}
        self._refused[key] = (uri, why)

    def _clear_refused(self, prefix: str) -> None:
        """A new listing of ``prefix`` replaces what earlier listings refused under it."""
        refused = getattr(self, "_refused", {})
        for key in [k for k in refused if k.startswith(prefix)]:
            del refused[key]

    def refused(self, prefix: str = "") -> dict[str, str]:
        """``{uri: why}`` of the entries under ``prefix`` that listing saw and refused to read
        (so that the bronze asset can name them; they are never staged, read or followed)."""
        return {uri: why for key, (uri, why) in getattr(self, "_refused", {}).items() if key.startswith(prefix)}

    def dataset_files(self, ds: Dataset) -> list[LandedFile]:
        """The dataset's files under ``<system>/<dataset>/dt=YYYY-MM-DD/`` with its extension,
        sorted by key. Files elsewhere or with unsafe keys are not the dataset's."""
        out = []
        for f in self.list_files(ds.landing_prefix + "/"):
            rest = f.key[len(ds.landing_prefix) + 1 :]
            if not safe_key(f.key) or not f.key.lower().endswith(ds.ext):
                continue
            if not re.match(r"^dt=[0-9]{4}-[0-9]{2}-[0-9]{2}/[^/]+$", rest):
                continue
            out.append(f)
        return sorted(out, key=lambda f: f.key)


class LocalLandingStore(LandingStore):
    def __init__(self, root: str):
        self.root = Path(parse_uri(root)[1])
        self.root_uri = str(self.root)

    def list_files(self, prefix: str = "") -> list[LandedFile]:
        base = self.root / prefix
        self._clear_refused(prefix)
        if not base.exists():
            return []
        # a linked system or dataset folder could lead anywhere: never walked into
        part = self.root
        for name in Path(prefix).parts:
            part = part / name
            if part.is_symlink():
                self._refuse(prefix, str(part), "symbolic link to a folder: never followed")
                return []
        out = []
        for dirpath, dirs, files in os.walk(base, followlinks=False):
            for name in dirs:
                full = Path(dirpath) / name
                if full.is_symlink():  # os.walk does not descend into it; say so
                    self._refuse(full.relative_to(self.root).as_posix() + "/", str(full),
                                 "symbolic link to a folder: never followed")
            for name in files:
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                st = full.lstat()
                if stat.S_ISLNK(st.st_mode):
                    # never follow links: one could point anywhere outside the landing root
                    self._refuse(key, str(full), "symbolic link: never followed")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    self._refuse(key, str(full), "not a regular file (FIFO, socket or device): never read")
                    continue
                out.append(
                    LandedFile(
                        key=key,
                        uri=str(full),
                        size=st.st_size,
                        etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
                        # arrival time: ctime too, so a copy that kept an old mtime is still new
                        last_modified=max(st.st_mtime, st.st_ctime),
                    )
                )
        return sorted(out, key=lambda f: f.key)

    def local_path(self, f: LandedFile) -> str:
        return str(self.root / f.key)


def landing_store(uri: str) -> LandingStore:
    scheme, _ = parse_uri(uri)
    if scheme == "file":
        return LocalLandingStore(uri)
    from etl_assets.s3 import S3LandingStore  # boto3 only where needed

    return S3LandingStore(uri)
