"""Throwaway servers for the engine and environment tests, all on 127.0.0.1 free ports, started
and stopped by the tests: a Spark standalone master + worker and a Spark Connect server (from
the installed pyspark), a PostgreSQL cluster (Debian's ``postgresql`` package; run as the
``postgres`` user when the tests run as root) and moto's AWS server. Plus helpers to run
``etl_all`` in a subprocess with a clean environment and to compare gold tables.

Every server is a context manager; its process (group) is stopped on exit, and its logs are
quoted in the error when it does not come up.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(PYTHON).parent
SPARK_HOME = Path(__import__("pyspark").__file__).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_until(pred, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail(log) if log else ''}")
        time.sleep(0.3)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s\n{tail(log) if log else ''}")


def _start(cmd: list[str], log: Path, env: dict, cwd: Path | None = None) -> subprocess.Popen:
    fh = open(log, "ab")
    try:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    finally:
        fh.close()


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stop a process started by ``_start`` and its process group (JVM children included)."""
    if proc is None or proc.poll() is not None and not _group_alive(proc.pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            if not _group_alive(proc.pid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def spark_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=PYTHON,
        SPARK_NO_DAEMONIZE="1",
    )
    env.update(extra or {})
    return env


# -- Spark standalone --------------------------------------------------------------------------


@dataclass
class SparkCluster:
    """A standalone master and its workers (``kill_worker``/``start_worker`` for fault tests)."""

    url: str
    ui_url: str
    workdir: Path
    env: dict
    cores: int
    memory: str
    timeout: float
    workers: list = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen:
        n = len(self.workers)
        log = self.workdir / f"worker-{n}.log"
        alive = _alive_workers(self.ui_url)
        worker = _start(
            [str(SPARK_HOME / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker", self.url,
             "--host", "127.0.0.1", "--webui-port", str(free_port()), "--cores", str(self.cores),
             "--memory", self.memory, "--work-dir", str(self.workdir / f"work-{n}")],
            log, self.env,
        )
        self.workers.append(worker)
        wait_until(lambda: _alive_workers(self.ui_url) > alive, self.timeout, "Spark worker", worker, log)
        return worker

    def kill_worker(self, worker: subprocess.Popen) -> None:
        """SIGKILL the worker and its executors (its process group), like a lost machine."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


@contextlib.contextmanager
def spark_cluster(workdir: Path, cores: int = 2, memory: str = "2g", timeout: float = 120):
    """A master and one worker on 127.0.0.1; yields a ``SparkCluster``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, ui = free_port(), free_port()
    env = spark_env({"SPARK_LOG_DIR": str(workdir), "SPARK_WORKER_DIR": str(workdir / "work")})
    master_log = workdir / "master.log"
    master = None
    cluster = None
    try:
        master = _start(
            [str(SPARK_HOME / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(ui)],
            master_log, env,
        )
        wait_until(lambda: "ALIVE" in master_log.read_text(errors="replace"), timeout, "Spark master", master,
                   master_log)
        cluster = SparkCluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}", workdir, env, cores, memory,
                               timeout)
        cluster.start_worker()
        yield cluster
    finally:
        for w in cluster.workers if cluster else []:
            stop(w)
        stop(master)


@contextlib.contextmanager
def spark_standalone(workdir: Path, cores: int = 2, memory: str = "2g", timeout: float = 120):
    """A master and one worker; yields ``(master_url, master_ui_url)``."""
    with spark_cluster(workdir, cores, memory, timeout) as cluster:
        yield cluster.url, cluster.ui_url


def master_state(ui_url: str) -> dict:
    with urllib.request.urlopen(f"{ui_url}/json/", timeout=5) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())


def _alive_workers(ui_url: str) -> int:
    try:
        return sum(1 for w in master_state(ui_url).get("workers", []) if w.get("state") == "ALIVE")
    except OSError:
        return 0


# -- Spark Connect -----------------------------------------------------------------------------


@contextlib.contextmanager
def spark_connect_server(workdir: Path, master: str = "local[2]", driver_memory: str = "2g", timeout: float = 180,
                         conf: dict | None = None):
    """The Spark Connect server in the foreground (what ``start-connect-server.sh --wait`` runs:
    ``spark-submit --class SparkConnectServer``; the pip package ships the server's jar but not
    that script) on a free port, with Delta Lake and S3A from the cached jars; yields
    ``sc://127.0.0.1:port``."""
    from etl_assets.jars import jar_paths
    from etl_assets.resources import BASE_CONF, DELTA_CONF
    from etl_assets.s3 import s3a_spark_conf

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = spark_env({"SPARK_LOG_DIR": str(workdir), "SPARK_PID_DIR": str(workdir)})
    log = workdir / "connect.log"
    conf = {
        **(conf or {}),
        **BASE_CONF,  # server-side settings a Connect client cannot set (spark.hadoop.*, UI)
        **DELTA_CONF,
        **s3a_spark_conf(env),
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
           "--name", "Spark Connect server", "--master", master, "--driver-memory", driver_memory,
           "--jars", ",".join(jar_paths())]
    for k, v in conf.items():
        cmd += ["--conf", f"{k}={v}"]
    proc = _start(cmd, log, env)
    try:
        wait_until(lambda: port_open(port), timeout, "Spark Connect server", proc, log)
        yield f"sc://127.0.0.1:{port}"
    finally:
        stop(proc)


# -- PostgreSQL --------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextlib.contextmanager
def postgres_server(timeout: float = 60):
    """A throwaway PostgreSQL cluster (trust auth, no fsync); yields a dict of connection settings.

    PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` user
    (``runuser``) and lives in its own temporary folder outside pytest's root-only tmp dirs."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: run .ci/install-system-deps (Debian package postgresql)")
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="etl-pg-"))
    data, sock, log = base / "data", base / "sock", base / "postgres.log"
    sock.mkdir()
    if as_root:
        pw = pwd.getpwnam("postgres")
        for p in (base, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"

    def run(*args, check=True):
        return subprocess.run(prefix + [str(bindir / args[0]), *args[1:]], env=env, cwd="/", check=check,
                              capture_output=True, text=True, timeout=120)

    started = False
    try:
        r = run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        opts = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=100")
        r = run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", str(int(timeout)), "start",
                check=False)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed:\n{r.stdout}\n{r.stderr}\n{tail(log)}")
        started = True
        r = run("psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE dagster",
                check=False)
        if r.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE failed:\n{r.stderr}")
        yield {"host": "127.0.0.1", "port": port, "user": "postgres", "password": "unused-trust-auth",
               "db": "dagster"}
    finally:
        if started:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


# -- moto (AWS) --------------------------------------------------------------------------------


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_REGION": "eu-west-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance metadata service
}


@contextlib.contextmanager
def moto_server():
    """moto's AWS server; yields its endpoint URL. The suite's one moto server
    (``moto_server.shared()``: started once per test process), emptied on entry and on exit."""
    from etl_assets_tests.moto_server import endpoint

    with endpoint() as url:
        yield url


# -- running etl_all ---------------------------------------------------------------------------


def clean_env(extra: dict | None = None) -> dict:
    """This process's environment without the platform's and Dagster's settings (the Makefile
    exports some), plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ETL_", "DAGSTER_", "SPARK_", "PYSPARK_", "AWS_"))
    }
    env.update(AWS_TEST_ENV)
    env.update(PYTHONPATH=str(REPO_ROOT), PYSPARK_PYTHON=PYTHON, ETL_SPARK_LOG_LEVEL="ERROR")
    env.update(extra or {})
    return env


def run_etl_all(env: dict, log: Path, timeout: float = 900, job: str = "etl_all", select: str | None = None) -> float:
    """``dagster job execute -m etl_assets -j etl_all`` in a subprocess (or, with ``select``,
    ``dagster asset materialize --select ...``); its wall seconds. Raises with the end of the
    log when it fails."""
    dagster_home = Path(env.get("DAGSTER_HOME") or log.parent / "dagster_home")
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "etl_assets" / "instance" / "dagster.local.yaml", dagster_home / "dagster.yaml")
    env = {**env, "DAGSTER_HOME": str(dagster_home)}
    started = time.monotonic()
    with open(log, "wb") as fh:
        args = ["asset", "materialize", "--select", select] if select else ["job", "execute", "-j", job]
        proc = subprocess.Popen([str(BIN / "dagster"), *args, "-m", "etl_assets"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise AssertionError(f"{select or job} did not finish in {timeout}s:\n{tail(log, 60)}") from None
    took = time.monotonic() - started
    if rc != 0:
        raise AssertionError(f"{select or job} failed (exit {rc}) after {took:.0f}s:\n{tail(log, 80)}")
    return took


# -- comparing tables --------------------------------------------------------------------------


def read_table(lake: Path | str, layer: str, table: str):
    """A published Delta table as a pyarrow Table (columns sorted by name, rows in a canonical
    order), read with the ``deltalake`` package: ``lake`` a folder or ``s3://bucket/prefix`` (the
    standard AWS variables plus the endpoint, ``lake.delta_storage_options``)."""
    import pyarrow as pa

    from etl_assets.lake import Lake

    t = Lake(str(lake)).arrow(layer, table)
    t = t.select(sorted(t.column_names))
    nested = (pa.types.is_list, pa.types.is_large_list, pa.types.is_struct, pa.types.is_map)
    keys = [f.name for f in t.schema if not any(is_(f.type) for is_ in nested)]
    return t.sort_by([(c, "ascending") for c in keys]).combine_chunks()


def table_differences(a_lake: Path | str, b_lake: Path | str, layer: str, tables) -> list[str]:
    """Human-readable differences between the same tables of two lakes (empty: equal)."""
    out = []
    for name in tables:
        a, b = read_table(a_lake, layer, name), read_table(b_lake, layer, name)
        if a.schema != b.schema:
            out.append(f"{layer}/{name}: schema differs:\n{a.schema}\nvs\n{b.schema}")
        elif a.num_rows != b.num_rows:
            out.append(f"{layer}/{name}: {a.num_rows} rows vs {b.num_rows}")
        elif not a.equals(b):
            ra, rb = a.to_pylist(), b.to_pylist()
            first = next(i for i, (x, y) in enumerate(zip(ra, rb)) if x != y)
            out.append(f"{layer}/{name}: row {first} differs: {ra[first]} vs {rb[first]}")
    return out
