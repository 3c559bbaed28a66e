"""Alerts: run failures and failed asset checks, routed by severity to the configured sinks.

Two sensors (registered in ``definitions.py``, running by default under ``make dev``):

- ``run_failure_alerts`` (a ``@run_failure_sensor``): one alert per failed run of this code
  location, naming the job, the run, the failed steps with their first error line, and the
  assets the run planned but did not materialize.
- ``asset_check_failure_alerts``: reads ``ASSET_CHECK_EVALUATION`` events from the instance's
  event log after its cursor, one alert per failed check evaluation, naming the asset, the check,
  its failing counts (``failed_rows`` and the other numeric metadata of the check) and the run.
  The cursor holds the newest event time read and the keys (run id + storage id) of the failures
  alerted near it, so each failure alerts once and a later tick sends nothing more (storage ids
  alone cannot be the cursor: the default SQLite event log numbers events per run). With no
  cursor yet (first start) it looks back ``ETL_ALERT_CHECK_LOOKBACK_S`` seconds (default one
  day), not over all history.

Severity: a failed check has its own severity (``ERROR`` or ``WARN``); a failed run is ``ERROR``.
Order: ``INFO < WARN < ERROR < CRITICAL``. Each sink takes the alerts at or above its minimum:

| sink | configured by | minimum severity (variable, default) |
| --- | --- | --- |
| JSON-lines alert log (one JSON object per alert) | ``ETL_ALERT_LOG`` (default ``$DAGSTER_HOME/alerts.jsonl``, else ``.state/alerts.jsonl``; ``none`` turns it off) | ``ETL_ALERT_MIN_SEVERITY`` (``WARN``) |
| Slack-compatible webhook: POST ``{"text": ...}`` | ``ETL_ALERT_WEBHOOK_URL`` | ``ETL_ALERT_WEBHOOK_MIN_SEVERITY`` (``WARN``) |
| AWS SNS ``Publish`` through boto3 | ``ETL_ALERT_SNS_TOPIC_ARN`` (region from the ARN or ``ETL_ALERT_SNS_REGION``; ``ETL_ALERT_SNS_ENDPOINT_URL`` for a non-AWS endpoint) | ``ETL_ALERT_SNS_MIN_SEVERITY`` (``ERROR``) |

``ETL_ALERT_MIN_SEVERITY`` also drops anything below it from every sink. ``ETL_ALERT_UI_URL``
(e.g. ``http://127.0.0.1:3000``) adds a link to the run. Variables are read at every tick.

Delivery is at most once: a sink that fails (webhook down, SNS error) is logged and recorded in
the alert log line (``delivery``), and the cursor still moves on, so an outage never turns into
a storm of repeated alerts. Variables: ``ETL_ALERT_SENSORS_DEFAULT_STATUS`` (``running`` /
``stopped``; falls back to ``ETL_SENSOR_DEFAULT_STATUS``) sets whether the sensors start running.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dagster import (
    DagsterEventType,
    DefaultSensorStatus,
    EventRecordsFilter,
    RunShardedEventsCursor,
    RunFailureSensorContext,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)

log = logging.getLogger(__name__)

SEVERITIES = {"INFO": 10, "WARN": 20, "WARNING": 20, "ERROR": 30, "CRITICAL": 40}
REPO_ROOT = Path(__file__).resolve().parents[1]
MARGIN_S = 300.0  # events read again this long after the newest one (dedupe by key)
RUN_WINDOW_S = 86400.0  # runs updated within this window are searched (SQLite run shards)


def _level(name: str | None, default: str) -> int:
    raw = (name or default).strip().upper()
    if raw not in SEVERITIES:
        raise ValueError(f"unknown alert severity {name!r}: expected one of INFO, WARN, ERROR, CRITICAL")
    return SEVERITIES[raw]


@dataclass
class Alert:
    kind: str  # run_failure | asset_check_failure
    severity: str  # WARN | ERROR | ...
    title: str
    run_id: str
    job: str | None = None
    asset: str | None = None  # "layer/table"
    check: str | None = None
    failing_counts: dict = field(default_factory=dict)
    description: str = ""
    details: dict = field(default_factory=dict)
    event_time: str | None = None
    dedupe_key: str = ""

    def text(self, ui_url: str | None = None) -> str:
        """The one message every sink sends (Slack mrkdwn-friendly)."""
        icon = {"WARN": ":warning:", "ERROR": ":red_circle:", "CRITICAL": ":rotating_light:"}.get(self.severity, "")
        parts = [f"{icon} [{self.severity}] {self.title}".strip()]
        facts = []
        if self.asset:
            facts.append(f"asset `{self.asset}`")
        if self.check:
            facts.append(f"check `{self.check}`")
        if self.failing_counts:
            facts.append(", ".join(f"{k}={_fmt(v)}" for k, v in list(self.failing_counts.items())[:6]))
        facts.append(f"run `{self.run_id}`" + (f" (job `{self.job}`)" if self.job else ""))
        parts.append(" · ".join(facts))
        if self.description:
            parts.append(self.description[:1500])
        if ui_url:
            parts.append(f"{ui_url.rstrip('/')}/runs/{self.run_id}")
        return "\n".join(parts)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass
class AlertConfig:
    log_path: Path | None
    min_level: int
    webhook_url: str | None = None
    webhook_min_level: int = SEVERITIES["WARN"]
    webhook_timeout_s: float = 10.0
    sns_topic_arn: str | None = None
    sns_min_level: int = SEVERITIES["ERROR"]
    sns_region: str | None = None
    sns_endpoint_url: str | None = None
    ui_url: str | None = None

    @classmethod
    def from_env(cls, env: dict | None = None) -> "AlertConfig":
        env = os.environ if env is None else env
        raw_log = env.get("ETL_ALERT_LOG", "").strip()
        if raw_log.lower() in ("none", "off", "0", "false"):
            log_path = None
        elif raw_log:
            log_path = Path(raw_log)
        elif env.get("DAGSTER_HOME"):
            log_path = Path(env["DAGSTER_HOME"]) / "alerts.jsonl"
        else:
            log_path = REPO_ROOT / ".state" / "alerts.jsonl"
        arn = env.get("ETL_ALERT_SNS_TOPIC_ARN", "").strip() or None
        region = env.get("ETL_ALERT_SNS_REGION", "").strip() or None
        if arn and not region and arn.count(":") >= 5:
            region = arn.split(":")[3] or None
        return cls(
            log_path=log_path,
            min_level=_level(env.get("ETL_ALERT_MIN_SEVERITY"), "WARN"),
            webhook_url=env.get("ETL_ALERT_WEBHOOK_URL", "").strip() or None,
            webhook_min_level=_level(env.get("ETL_ALERT_WEBHOOK_MIN_SEVERITY"), "WARN"),
            webhook_timeout_s=float(env.get("ETL_ALERT_WEBHOOK_TIMEOUT_S", "10") or 10),
            sns_topic_arn=arn,
            sns_min_level=_level(env.get("ETL_ALERT_SNS_MIN_SEVERITY"), "ERROR"),
            sns_region=region,
            sns_endpoint_url=env.get("ETL_ALERT_SNS_ENDPOINT_URL", "").strip() or None,
            ui_url=env.get("ETL_ALERT_UI_URL", "").strip() or None,
        )


# -- sinks -----------------------------------------------------------------------------------


def send_webhook(url: str, text: str, timeout: float) -> None:
    body = json.dumps({"text": text}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - configured URL
        if resp.status >= 300:
            raise RuntimeError(f"webhook answered HTTP {resp.status}")


def send_sns(config: AlertConfig, alert: Alert, text: str) -> str:
    import boto3

    client = boto3.client("sns", region_name=config.sns_region, endpoint_url=config.sns_endpoint_url)
    subject = f"[{alert.severity}] {alert.title}"
    subject = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in subject)[:100]
    resp = client.publish(
        TopicArn=config.sns_topic_arn,
        Subject=subject,
        Message=text + "\n\n" + json.dumps(asdict(alert), default=str, sort_keys=True),
        MessageAttributes={
            "severity": {"DataType": "String", "StringValue": alert.severity},
            "kind": {"DataType": "String", "StringValue": alert.kind},
        },
    )
    return resp.get("MessageId", "")


def dispatch(alert: Alert, config: AlertConfig | None = None, logger=None) -> dict[str, str]:
    """Send ``alert`` to every sink whose minimum severity it reaches; returns sink -> outcome
    (``sent``, ``below <level>``, ``error: ...``). Never raises for a failing sink."""
    config = config or AlertConfig.from_env()
    logger = logger or log
    level = SEVERITIES.get(alert.severity.upper(), SEVERITIES["ERROR"])
    if level < config.min_level:
        return {"all": "below ETL_ALERT_MIN_SEVERITY"}
    text = alert.text(config.ui_url)
    delivery: dict[str, str] = {}
    if config.webhook_url:
        if level < config.webhook_min_level:
            delivery["webhook"] = "below ETL_ALERT_WEBHOOK_MIN_SEVERITY"
        else:
            try:
                send_webhook(config.webhook_url, text, config.webhook_timeout_s)
                delivery["webhook"] = "sent"
            except Exception as e:
                delivery["webhook"] = f"error: {type(e).__name__}: {e}"
                logger.warning(f"alert webhook failed: {e}")
    if config.sns_topic_arn:
        if level < config.sns_min_level:
            delivery["sns"] = "below ETL_ALERT_SNS_MIN_SEVERITY"
        else:
            try:
                delivery["sns"] = f"sent {send_sns(config, alert, text)}".strip()
            except Exception as e:
                delivery["sns"] = f"error: {type(e).__name__}: {e}"
                logger.warning(f"alert SNS publish failed: {e}")
    if config.log_path is not None:
        try:
            config.log_path.parent.mkdir(parents=True, exist_ok=True)
            record = {
                "alerted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                **asdict(alert),
                "text": text,
                "delivery": delivery,
            }
            with open(config.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=str, sort_keys=True) + "\n")
            delivery["log"] = "sent"
        except OSError as e:
            delivery["log"] = f"error: {e}"
            logger.warning(f"alert log {config.log_path} not writable: {e}")
    logger.info(f"alert {alert.dedupe_key or alert.title}: {delivery}")
    return delivery


# -- building alerts from Dagster events -----------------------------------------------------


def _asset_str(key) -> str:
    return "/".join(key.path) if key is not None else ""


def _numeric(metadata: dict) -> dict:
    out = {}
    for k, v in (metadata or {}).items():
        value = getattr(v, "value", v)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[k] = value
    first = [k for k in ("failed_rows", "failing_rows", "failures") if k in out]
    return {k: out[k] for k in first + sorted(k for k in out if k not in first)}


def check_alert(record) -> Alert | None:
    """The alert for one ASSET_CHECK_EVALUATION event record (None when the check passed)."""
    entry = record.event_log_entry
    ev = entry.dagster_event.event_specific_data
    if ev is None or ev.passed:
        return None
    severity = getattr(ev.severity, "value", str(ev.severity)) or "ERROR"
    meta = dict(ev.metadata or {})
    what = meta.get("what_failed")
    description = ev.description or (str(getattr(what, "value", what)) if what is not None else "")
    samples = meta.get("sample_keys")
    details = {"sample_keys": getattr(samples, "value", samples)} if samples is not None else {}
    asset = _asset_str(ev.asset_key)
    return Alert(
        kind="asset_check_failure",
        severity=str(severity).upper(),
        title=f"Asset check failed: {asset} / {ev.check_name}",
        run_id=entry.run_id,
        job=entry.job_name,
        asset=asset,
        check=ev.check_name,
        failing_counts=_numeric(meta),
        description=description,
        details=details,
        event_time=dt.datetime.fromtimestamp(entry.timestamp, dt.timezone.utc).isoformat(timespec="seconds"),
        dedupe_key=f"check:{entry.run_id}:{record.storage_id}",
    )


def failed_check_alerts(
    instance, cursor: dict | None, lookback_s: float, margin_s: float = MARGIN_S, run_window_s: float = RUN_WINDOW_S
) -> tuple[list[Alert], dict]:
    """(alerts, new cursor) for the failed check evaluations not alerted yet.

    The cursor is ``{"ts": newest event time read, "seen": [failed events within margin_s of
    it]}``. The default SQLite event log is sharded per run (storage ids are not comparable
    across runs), so events are selected by time: those after ``ts - margin_s`` (events are
    written a moment after they are stamped) minus the ``seen`` ones, in runs updated within
    ``run_window_s``. On Postgres the same query works unchanged."""
    now = time.time()
    if cursor:
        since, seen = float(cursor["ts"]) - margin_s, set(cursor.get("seen", []))
    else:
        since, seen = now - lookback_s, set()
    runs_after = dt.datetime.fromtimestamp(min(since, now - run_window_s), dt.timezone.utc)
    flt = EventRecordsFilter(
        event_type=DagsterEventType.ASSET_CHECK_EVALUATION,
        after_timestamp=since,
        after_cursor=RunShardedEventsCursor(id=0, run_updated_after=runs_after),
    )
    records = sorted(instance.get_event_records(flt, ascending=True), key=lambda r: r.event_log_entry.timestamp)
    alerts, newest = [], float(cursor["ts"]) if cursor else since
    failed_seen: dict[str, float] = {}
    for r in records:
        entry = r.event_log_entry
        newest = max(newest, entry.timestamp)
        alert = check_alert(r)
        if alert is None:
            continue
        failed_seen[alert.dedupe_key] = entry.timestamp
        if alert.dedupe_key not in seen:
            alerts.append(alert)
    # every tick reads the window again from newest - margin_s: the failures in it stay "seen"
    keep = sorted(k for k, ts in failed_seen.items() if ts >= newest - margin_s)
    return alerts, {"ts": newest, "seen": keep}


def run_alert(context: RunFailureSensorContext) -> Alert:
    run = context.dagster_run
    steps = []
    for ev in context.get_step_failure_events():
        err = getattr(ev.event_specific_data, "error", None)
        while err is not None and getattr(err, "cause", None) is not None:  # the user code's error
            err = err.cause
        first = (err.message if err else "").strip().splitlines()
        steps.append(f"{ev.step_key}: {first[0][:300] if first else 'failed'}")
    missing: list[str] = []
    try:
        planned, done = set(), set()
        for entry in context.instance.all_logs(
            run.run_id,
            of_type={DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_MATERIALIZATION},
        ):
            key = _asset_str(entry.dagster_event.asset_key)
            (done if entry.dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION else planned).add(key)
        missing = sorted(planned - done)
    except Exception as e:  # pragma: no cover - the alert still goes out without this detail
        log.warning(f"could not list the run's assets: {e}")
    failure_msg = (context.failure_event.message or "").strip() if context.failure_event else ""
    description = "\n".join([*(f"- {s}" for s in steps[:10]), *([failure_msg] if not steps and failure_msg else [])])
    if missing:
        description += ("\n" if description else "") + "not materialized: " + ", ".join(missing[:20])
        if len(missing) > 20:
            description += f" (+{len(missing) - 20} more)"
    return Alert(
        kind="run_failure",
        severity="ERROR",
        title=f"Run failed: {run.job_name}",
        run_id=run.run_id,
        job=run.job_name,
        asset=", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "") if missing else None,
        failing_counts={"failed_steps": len(steps), "assets_not_materialized": len(missing)},
        description=description,
        details={"failed_steps": steps, "assets_not_materialized": missing},
        event_time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        dedupe_key=f"run:{run.run_id}",
    )


# -- the sensors -----------------------------------------------------------------------------


def _default_status() -> DefaultSensorStatus:
    raw = (
        os.environ.get("ETL_ALERT_SENSORS_DEFAULT_STATUS") or os.environ.get("ETL_SENSOR_DEFAULT_STATUS") or "running"
    ).strip().lower()
    if raw not in ("running", "stopped"):
        raise ValueError(f"ETL_ALERT_SENSORS_DEFAULT_STATUS={raw!r}: expected running or stopped")
    return DefaultSensorStatus.RUNNING if raw == "running" else DefaultSensorStatus.STOPPED


@run_failure_sensor(
    name="run_failure_alerts",
    minimum_interval_seconds=30,
    default_status=_default_status(),
    description="Alerts once per failed run (job, run, failed steps, assets not materialized) to the "
    "alert log / webhook / SNS by severity (etl_assets/alerts.py).",
)
def run_failure_alerts(context: RunFailureSensorContext):
    alert = run_alert(context)
    dispatch(alert, logger=context.log)


@sensor(
    name="asset_check_failure_alerts",
    minimum_interval_seconds=30,
    default_status=_default_status(),
    description="Alerts once per failed asset check evaluation (asset, check, failing counts, run) to the "
    "alert log / webhook / SNS by severity; its cursor is the newest event time read plus the failures alerted near it.",
)
def asset_check_failure_alerts(context: SensorEvaluationContext):
    cursor = json.loads(context.cursor) if context.cursor else None
    lookback = float(os.environ.get("ETL_ALERT_CHECK_LOOKBACK_S", "86400") or 86400)
    alerts, new_cursor = failed_check_alerts(context.instance, cursor, lookback)
    config = AlertConfig.from_env()
    for alert in alerts:
        dispatch(alert, config, logger=context.log)
    if new_cursor != cursor:
        context.update_cursor(json.dumps(new_cursor, sort_keys=True))
    if not alerts:
        return SkipReason("no failed asset check since the last tick")
    return SkipReason(f"alerted {len(alerts)} failed asset check(s)")


ALERT_SENSORS = [run_failure_alerts, asset_check_failure_alerts]
