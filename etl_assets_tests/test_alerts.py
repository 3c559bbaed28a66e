"""Alerts: a forced asset-check failure reaches a local webhook receiver and moto SNS exactly
once, a second sensor tick sends nothing more; routing by severity; run-failure alerts.

Everything runs on 127.0.0.1: an ``http.server`` receiver on a free port (the Slack-compatible
webhook) and the suite's moto server (``moto_server.shared()``), with an SQS queue subscribed
to the SNS topic to count what was published. The Dagster instance is a temporary one.

Every sink is called synchronously by the sensor tick (the webhook POST waits for the
receiver's answer, which is sent after the body is recorded; moto delivers SNS to SQS inside
``Publish``), so once a tick has returned, what it sent has arrived: "nothing more" is asserted
right after the tick, without waiting.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    DagsterEventType,
    MaterializeResult,
    asset,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from etl_assets.alerts import AlertConfig, asset_check_failure_alerts, run_failure_alerts
from etl_assets_tests.moto_server import FAKE_AWS_ENV, REGION
from etl_assets_tests.moto_server import endpoint as moto_endpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A Slack-compatible webhook endpoint on 127.0.0.1 that records every POSTed JSON body."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.requests = 0  # requests that reached the receiver (recorded or not)
        received = self.bodies
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                receiver.requests += 1
                n = int(self.headers.get("Content-Length", 0))
                received.append({"content_type": self.headers.get("Content-Type"), **json.loads(self.rfile.read(n))})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def aws():
    """The suite's moto server (emptied); an SNS topic with an SQS queue subscribed (to count publishes)."""
    mp = pytest.MonkeyPatch()
    for k, v in FAKE_AWS_ENV.items():
        mp.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SNS"):
        mp.delenv(k, raising=False)
    try:
        with moto_endpoint() as endpoint:
            sns = boto3.client("sns", region_name=REGION, endpoint_url=endpoint)
            sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
            topic = sns.create_topic(Name="etl-alerts")["TopicArn"]
            queue = sqs.create_queue(QueueName="etl-alerts-inbox")["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
            yield {"endpoint": endpoint, "topic": topic, "sqs": sqs, "queue": queue}
    finally:
        mp.undo()


def drain(aws) -> list[dict]:
    """Every SNS notification delivered to the queue since the last drain."""
    out = []
    while True:
        got = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10, WaitTimeSeconds=0)
        msgs = got.get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            out.append(json.loads(m["Body"]))
            aws["sqs"].delete_message(QueueUrl=aws["queue"], ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture
def sinks(aws, tmp_path, monkeypatch):
    with Receiver() as hook:
        alert_log = tmp_path / "alerts.jsonl"
        monkeypatch.setenv("ETL_ALERT_LOG", str(alert_log))
        monkeypatch.setenv("ETL_ALERT_WEBHOOK_URL", hook.url)
        monkeypatch.setenv("ETL_ALERT_SNS_TOPIC_ARN", aws["topic"])
        monkeypatch.setenv("ETL_ALERT_SNS_ENDPOINT_URL", aws["endpoint"])
        for k in ("ETL_ALERT_MIN_SEVERITY", "ETL_ALERT_WEBHOOK_MIN_SEVERITY", "ETL_ALERT_SNS_MIN_SEVERITY",
                  "ETL_ALERT_SNS_REGION", "ETL_ALERT_UI_URL"):
            monkeypatch.delenv(k, raising=False)
        drain(aws)
        yield {"hook": hook, "log": alert_log, "aws": aws}


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- a tiny asset whose checks fail -----------------------------------------------------------


@asset(
    key=["gold", "alert_probe"],
    check_specs=[
        AssetCheckSpec("row_rules", asset=["gold", "alert_probe"]),
        AssetCheckSpec("volume", asset=["gold", "alert_probe"]),
        AssetCheckSpec("primary_key_unique", asset=["gold", "alert_probe"]),
    ],
)
def alert_probe():
    yield MaterializeResult(
        metadata={"dagster/row_count": 3},
        check_results=[
            AssetCheckResult(
                check_name="row_rules",
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                metadata={"failed_rows": 12, "rows_checked": 3000, "what_failed": "12 rows with amount < 0"},
            ),
            AssetCheckResult(
                check_name="volume",
                passed=False,
                severity=AssetCheckSeverity.WARN,
                metadata={"failed_rows": 0, "row_count": 3, "median": 3000.0},
            ),
            AssetCheckResult(check_name="primary_key_unique", passed=True, metadata={"failed_rows": 0}),
        ],
    )


def evaluate(instance, cursor):
    """One synchronous evaluation of the sensor (every sink has been called when it returns)."""
    return asset_check_failure_alerts.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))


def tick(instance, cursor):
    return evaluate(instance, cursor).cursor


def test_check_failure_alerts_once_per_failure(sinks):
    hook, aws = sinks["hook"], sinks["aws"]
    with instance_for_test() as instance:
        result = materialize([alert_probe], instance=instance)
        assert result.success  # failing (non-blocking) checks do not fail the run
        run_id = result.run_id

        cursor = tick(instance, None)
        assert json.loads(cursor)["seen"], cursor

        # webhook: both failures (ERROR and WARN reach the WARN minimum), Slack-compatible JSON
        assert len(hook.bodies) == 2, hook.bodies
        assert all(b["content_type"] == "application/json" and set(b) == {"content_type", "text"} for b in hook.bodies)
        error_text = next(b["text"] for b in hook.bodies if "[ERROR]" in b["text"])
        for fact in ("gold/alert_probe", "row_rules", "failed_rows=12", run_id, "12 rows with amount < 0"):
            assert fact in error_text, (fact, error_text)
        assert any("[WARN]" in b["text"] and "volume" in b["text"] for b in hook.bodies)
        assert not any("primary_key_unique" in b["text"] for b in hook.bodies)  # passed: no alert

        # SNS: only the ERROR failure (minimum ERROR), exactly once
        published = drain(aws)
        assert len(published) == 1, published
        assert published[0]["Subject"].startswith("[ERROR] Asset check failed: gold/alert_probe / row_rules")
        assert run_id in published[0]["Message"] and "failed_rows=12" in published[0]["Message"]
        assert published[0]["MessageAttributes"]["severity"]["Value"] == "ERROR"

        # JSON-lines log: one line per alert, with what each sink did
        lines = log_lines(sinks["log"])
        assert [(x["check"], x["severity"]) for x in lines] == [("row_rules", "ERROR"), ("volume", "WARN")] or \
            sorted((x["check"], x["severity"]) for x in lines) == [("row_rules", "ERROR"), ("volume", "WARN")]
        row_rules = next(x for x in lines if x["check"] == "row_rules")
        assert row_rules["asset"] == "gold/alert_probe" and row_rules["run_id"] == run_id
        assert row_rules["failing_counts"]["failed_rows"] == 12
        assert row_rules["delivery"]["webhook"] == "sent" and row_rules["delivery"]["sns"].startswith("sent")
        volume = next(x for x in lines if x["check"] == "volume")
        assert volume["delivery"]["sns"] == "below ETL_ALERT_SNS_MIN_SEVERITY"

        # a second tick: nothing more anywhere (the tick is synchronous: what it sent has arrived)
        assert hook.requests == 2
        second = evaluate(instance, cursor)
        cursor2 = second.cursor
        assert second.skip_message == "no failed asset check since the last tick", second.skip_message
        assert hook.requests == 2 and len(hook.bodies) == 2
        assert drain(aws) == []
        assert len(log_lines(sinks["log"])) == 2

        # a new failure (another run) alerts once more, and only once
        again = materialize([alert_probe], instance=instance)
        cursor3 = tick(instance, cursor2)
        assert json.loads(cursor3)["ts"] > json.loads(cursor2)["ts"]
        assert len(hook.bodies) == 4 and again.run_id in hook.bodies[-1]["text"] + hook.bodies[-2]["text"]
        assert len(drain(aws)) == 1
        tick(instance, cursor3)
        assert len(hook.bodies) == 4 and drain(aws) == []


def test_min_severity_and_failing_sink(sinks, monkeypatch):
    """ETL_ALERT_MIN_SEVERITY=ERROR drops WARN everywhere; a dead webhook does not stop SNS or the
    log, is recorded, and is not retried on the next tick."""
    aws = sinks["aws"]
    monkeypatch.setenv("ETL_ALERT_MIN_SEVERITY", "ERROR")
    monkeypatch.setenv("ETL_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{_free_port()}/nobody-listens")
    monkeypatch.setenv("ETL_ALERT_WEBHOOK_TIMEOUT_S", "2")
    with instance_for_test() as instance:
        materialize([alert_probe], instance=instance)
        cursor = tick(instance, None)
        lines = log_lines(sinks["log"])
        assert [x["check"] for x in lines] == ["row_rules"]
        assert lines[0]["delivery"]["webhook"].startswith("error:")
        assert len(drain(aws)) == 1
        tick(instance, cursor)
        assert len(log_lines(sinks["log"])) == 1 and drain(aws) == []


def test_config_from_env_defaults(tmp_path):
    cfg = AlertConfig.from_env({"DAGSTER_HOME": str(tmp_path)})
    assert cfg.log_path == tmp_path / "alerts.jsonl"
    assert cfg.webhook_url is None and cfg.sns_topic_arn is None
    cfg = AlertConfig.from_env({"ETL_ALERT_LOG": "none", "ETL_ALERT_SNS_TOPIC_ARN": "arn:aws:sns:us-west-2:123456789012:t"})
    assert cfg.log_path is None and cfg.sns_region == "us-west-2"
    with pytest.raises(ValueError, match="severity"):
        AlertConfig.from_env({"ETL_ALERT_MIN_SEVERITY": "loud"})


@asset(key=["silver", "alert_boom"])
def alert_boom():
    raise RuntimeError("landing file truncated.parquet cannot be read")


def test_run_failure_alert(sinks):
    hook, aws = sinks["hook"], sinks["aws"]
    with instance_for_test() as instance:
        result = materialize([alert_boom], instance=instance, raise_on_error=False)
        assert not result.success
        failure = instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE)[0].dagster_event
        context = build_run_status_sensor_context(
            sensor_name="run_failure_alerts",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=failure,
        ).for_run_failure()
        run_failure_alerts(context)
        assert len(hook.bodies) == 1
        text = hook.bodies[0]["text"]
        for fact in ("[ERROR] Run failed", result.run_id, "alert_boom", "truncated.parquet", "silver/alert_boom"):
            assert fact in text, (fact, text)
        published = drain(aws)
        assert len(published) == 1 and result.run_id in published[0]["Message"]
        line = log_lines(sinks["log"])[0]
        assert line["kind"] == "run_failure" and line["failing_counts"] == {"failed_steps": 1, "assets_not_materialized": 1}
