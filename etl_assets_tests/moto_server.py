"""The one moto launcher of the test suite: moto's ``ThreadedMotoServer`` on 127.0.0.1, a free
port, started once per test process and shared by every test that needs AWS (S3, SNS, SQS,
Secrets Manager, EMR Serverless, CloudWatch Logs).

- ``shared()`` starts the server on first use and returns it (stopped when the process exits);
- ``moto_s3`` (module-scoped pytest fixture) gives a test module the shared server, empty
  (moto's ``POST /moto-api/reset``), with boto3 pointed at it through the standard AWS
  environment variables;
- ``servers.moto_server()`` (a context manager yielding the endpoint URL, for the engine and
  environment tests) is ``endpoint()`` below: the same server, reset on entry and on exit.

One region for everything: ``servers.AWS_TEST_ENV`` (``REGION``). ``MotoS3.client()`` gives an
S3 client in that region which adds the ``LocationConstraint`` S3 requires outside us-east-1 when
a test creates a bucket without one.

``MotoS3`` can be stopped (the listening socket is closed, so clients get "connection refused"
at once, as with an unreachable S3) and restarted on the same port; moto keeps its state in
process memory, so buckets and objects survive a restart (not a reset).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import socket
import threading
import time
import urllib.request

import pytest
from moto.server import ThreadedMotoServer

from etl_assets_tests.servers import AWS_TEST_ENV

REGION = AWS_TEST_ENV["AWS_REGION"]

FAKE_AWS_ENV = {
    **AWS_TEST_ENV,
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    # fail fast when the endpoint is down: 2 attempts, short connect timeout
    "ETL_S3_MAX_ATTEMPTS": "2",
    "ETL_S3_CONNECT_TIMEOUT_S": "2",
    "ETL_S3_READ_TIMEOUT_S": "30",
}


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _add_location_constraint(params, **_):
    if REGION != "us-east-1" and "CreateBucketConfiguration" not in params:
        params["CreateBucketConfiguration"] = {"LocationConstraint": REGION}


class MotoS3:
    starts = 0  # servers started in this process (the suite should need one)

    def __init__(self, host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port or _free_port(host)
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> "MotoS3":
        if self._server is None:
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
            server.start()
            self._server = server
            MotoS3.starts += 1
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection((self.host, self.port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            if server._server is not None:  # release the port: refuse connections immediately
                server._server.server_close()

    def reset(self) -> None:
        """Every AWS resource gone (moto's reset API): the next user starts empty."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=30).close()  # noqa: S310 - loopback only

    def client(self, service: str = "s3"):
        import boto3

        client = boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        if service == "s3":
            client.meta.events.register("before-parameter-build.s3.CreateBucket", _add_location_constraint)
        return client

    @staticmethod
    def backend():
        """moto's in-process S3 backend (fast bulk setup; reads still go over HTTP)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


_lock = threading.Lock()
_shared: MotoS3 | None = None


def shared() -> MotoS3:
    """The process's moto server, started on first use (and again if a test left it stopped)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = MotoS3()
            atexit.register(_shared.stop)
        return _shared.start()


@contextlib.contextmanager
def endpoint():
    """The shared server, empty; yields its endpoint URL and empties it again on exit."""
    server = shared()
    server.reset()
    try:
        yield server.endpoint
    finally:
        shared().reset()


@pytest.fixture(scope="module")
def moto_s3():
    server = shared()
    server.reset()
    mp = pytest.MonkeyPatch()
    for k, v in FAKE_AWS_ENV.items():
        mp.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SNS", "AWS_ENDPOINT_URL_SQS"):
        mp.delenv(k, raising=False)
    mp.setenv("AWS_ENDPOINT_URL", server.endpoint)
    try:
        yield server
    finally:
        mp.undo()
        shared().reset()  # running again if a test stopped it; empty for the next module


@contextlib.contextmanager
def moto_process(host: str = "127.0.0.1"):
    """A moto server in a process of its own (``python -m moto.server``), yielding a ``MotoS3``
    pointed at it, with boto3 and ``deltalake`` pointed at it through the standard AWS variables.

    For tests whose code reads S3 through ``deltalake``: its calls hold the GIL while they wait
    for S3, so a moto server on a thread of the same process (``shared()``) never answers them."""
    import subprocess
    import sys

    server = MotoS3(host)
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", host, "-p", str(server.port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mp = pytest.MonkeyPatch()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((host, server.port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server on {host}:{server.port} did not start (rc={proc.poll()})")
                time.sleep(0.1)
        for k, v in FAKE_AWS_ENV.items():
            mp.setenv(k, v)
        for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(k, raising=False)
        mp.setenv("AWS_ENDPOINT_URL", server.endpoint)
        yield server
    finally:
        mp.undo()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
