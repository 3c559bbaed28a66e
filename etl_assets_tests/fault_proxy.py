"""A fault-injecting HTTP proxy for S3 tests: a small threaded HTTP server on 127.0.0.1 that
forwards every request to an upstream S3 endpoint (moto's server) and, by rule, answers some of
them with a fault instead.

Faults (``Fault``):

- ``slowdown``  503 with S3's ``SlowDown`` error body (S3's throttling answer)
- ``throttle``  429 ``TooManyRequests`` (a throttling status botocore has no model for)
- ``internal``  500 ``InternalError``
- ``unavailable`` 503 ``ServiceUnavailable``
- ``timeout``   no answer for ``delay_s`` seconds, then the connection is closed (longer than the
  client's read timeout: the client times out)
- ``reset``     the connection is closed without an answer
- ``truncate``  the upstream answer's headers and half of its body, then the connection closes

A ``Rule`` picks requests (method, whether the request lists a bucket, a substring of the path)
and fires for its first ``times`` matches, or with ``probability`` (seeded), or always.
Every request is recorded (``ProxyRecord``): method, path, the SDK's ``amz-sdk-request`` header
(``attempt=N; max=M``), the fault injected, the status returned and when.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}

ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "throttle": (429, "TooManyRequests", "Too many requests."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "unavailable": (503, "ServiceUnavailable", "Service is unable to handle request."),
}
FAULTS = (*ERRORS, "timeout", "reset", "truncate")


@dataclass
class Rule:
    fault: str
    method: str | None = None  # GET, HEAD, ... (None: any)
    listing: bool | None = None  # True: ListObjects requests only; False: object requests only
    path_contains: str | None = None  # a substring of the decoded path (an object key)
    times: int | None = None  # fire for the first N matches (None: unlimited)
    probability: float = 1.0
    retry_after_ms: int | None = None  # x-amz-retry-after on error answers
    delay_s: float = 2.0  # timeout: how long to stay silent
    fired: int = 0

    def __post_init__(self):
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; one of {', '.join(FAULTS)}")

    def matches(self, method: str, path: str, query: str) -> bool:
        if self.method and method != self.method:
            return False
        is_listing = "list-type=" in query or (method == "GET" and path.count("/") == 1)
        if self.listing is not None and is_listing != self.listing:
            return False
        if self.path_contains and self.path_contains not in path:
            return False
        return self.times is None or self.fired < self.times


@dataclass
class ProxyRecord:
    at: float
    method: str
    path: str
    query: str
    sdk_request: str
    fault: str | None
    status: int | None
    done_at: float = 0.0

    @property
    def attempt(self) -> int | None:
        for part in self.sdk_request.split(";"):
            k, _, v = part.strip().partition("=")
            if k == "attempt":
                return int(v)
        return None

    @property
    def max_attempts(self) -> int | None:
        for part in self.sdk_request.split(";"):
            k, _, v = part.strip().partition("=")
            if k == "max":
                return int(v)
        return None


@dataclass
class FaultProxy:
    upstream: str  # http://127.0.0.1:port
    host: str = "127.0.0.1"
    seed: int = 0
    rules: list[Rule] = field(default_factory=list)
    records: list[ProxyRecord] = field(default_factory=list)

    def __post_init__(self):
        u = urlsplit(self.upstream)
        self._up = (u.hostname, u.port or 80)
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._server: ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy = proxy
        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def add(self, *rules: Rule) -> None:
        with self._lock:
            self.rules.extend(rules)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def reset_records(self) -> None:
        with self._lock:
            self.records.clear()

    def faults(self) -> list[ProxyRecord]:
        return [r for r in self.records if r.fault]

    # -- per request ---------------------------------------------------------------------------
    def _pick(self, method: str, path: str, query: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, query):
                    if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                        continue
                    rule.fired += 1
                    return rule
        return None

    def _record(self, rec: ProxyRecord) -> None:
        with self._lock:
            self.records.append(rec)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def log_message(self, *args):  # quiet
        pass

    def _handle(self):
        method = self.command
        split = urlsplit(self.path)
        path, query = unquote(split.path), split.query
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rule = self.proxy._pick(method, path, query)
        rec = ProxyRecord(time.monotonic(), method, path, query, self.headers.get("amz-sdk-request", ""),
                          rule.fault if rule else None, None)
        self.proxy._record(rec)
        try:
            if rule and rule.fault in ERRORS:
                status, code, message = ERRORS[rule.fault]
                payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                           f"<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                if rule.retry_after_ms is not None:
                    self.send_header("x-amz-retry-after", str(rule.retry_after_ms))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(payload)
                rec.status = status
                return
            if rule and rule.fault == "timeout":
                time.sleep(rule.delay_s)
                self.close_connection = True
                self._abort()
                return
            if rule and rule.fault == "reset":
                self.close_connection = True
                self._abort()
                return
            status, headers, data = self._forward(method, body)
            rec.status = status
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data) if method != "HEAD" else
                                                   int(dict((k.lower(), v) for k, v in headers).get("content-length", 0))))
            self.end_headers()
            if method == "HEAD":
                return
            if rule and rule.fault == "truncate" and len(data) > 1:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self._abort()
                return
            self.wfile.write(data)
        finally:
            rec.done_at = time.monotonic()

    def _forward(self, method: str, body: bytes):
        conn = http.client.HTTPConnection(*self.proxy._up, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(method, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def _abort(self):
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle
