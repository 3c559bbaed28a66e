"""A real S3 endpoint for tests: moto's ``ThreadedMotoServer`` on 127.0.0.1, a free port.

``MotoS3`` can be stopped (the listening socket is closed, so clients get "connection refused"
at once, as with an unreachable S3) and restarted on the same port; moto keeps its buckets in
process memory, so objects survive a restart. ``moto_s3`` is a module-scoped pytest fixture that
also points boto3 at the server through the standard AWS environment variables.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
from moto.server import ThreadedMotoServer

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    # fail fast when the endpoint is down: 2 attempts, short connect timeout
    "ETL_S3_MAX_ATTEMPTS": "2",
    "ETL_S3_CONNECT_TIMEOUT_S": "2",
    "ETL_S3_READ_TIMEOUT_S": "30",
}


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class MotoS3:
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
            deadline = time.monotonic() + 10
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

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    @staticmethod
    def backend():
        """moto's in-process S3 backend (fast bulk setup; reads still go over HTTP)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


@pytest.fixture(scope="module")
def moto_s3():
    server = MotoS3().start()
    mp = pytest.MonkeyPatch()
    for k, v in FAKE_AWS_ENV.items():
        mp.setenv(k, v)
    mp.delenv("AWS_PROFILE", raising=False)
    mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    mp.setenv("AWS_ENDPOINT_URL", server.endpoint)
    try:
        yield server
    finally:
        mp.undo()
        server.stop()
