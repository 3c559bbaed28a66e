"""Platform settings: the environment's YAML, overridden by environment variables, validated
when the code location loads.

``ETL_ENV`` (``local`` by default, ``staging``, ``prod``) selects
``etl_assets/environments/<env>.yaml``; any variable below overrides one value of it
(the full list is ``etl_assets.environments.OVERRIDES``).

| variable | meaning | local default |
| --- | --- | --- |
| ``ETL_ENV`` | ``local`` / ``staging`` / ``prod`` | ``local`` |
| ``ETL_LANDING_URI`` | landing zone root: folder, ``file://`` or ``s3://bucket/prefix`` | ``<repo>/data/landing`` |
| ``ETL_LAKE_URI`` | lake root | ``<repo>/data/lake`` |
| ``ETL_SPARK_MASTER`` | classic Spark master: ``local[*]``, ``spark://host:7077``, ``yarn`` | ``local[*]`` |
| ``ETL_SPARK_REMOTE`` | Spark Connect server ``sc://host:15002`` (selects Spark Connect) | unset |
| ``ETL_SPARK_ENGINE`` | ``classic`` / ``connect`` / ``emr`` (inferred from the two above) | ``classic`` |
| ``ETL_EXECUTOR`` | ``auto`` / ``in_process`` / ``multiprocess`` | ``auto`` |
| ``ETL_PII_SALT`` | salt of ``email_hash`` | ``DEV_PII_SALT`` (local only) |
| ``ETL_PII_KEY`` | AES key, 16/24/32 ASCII characters | ``DEV_PII_KEY`` (local only) |

Outside ``local`` the salt and key come from AWS Secrets Manager (secret names in the YAML,
``ETL_PII_SALT_SECRET`` / ``ETL_PII_KEY_SECRET``) unless the deployment injects
``ETL_PII_SALT`` / ``ETL_PII_KEY`` itself; a missing secret is a start-up error, and the
documented development values are refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from etl_assets.environments import ENVIRONMENTS, ConfigError, EnvironmentConfig, load_environment
from etl_assets.storage import parse_uri

REPO_ROOT = Path(__file__).resolve().parents[1]

# Development-only values, documented in the README. Never valid outside ETL_ENV=local.
DEV_PII_SALT = "local-dev-salt-not-secret"
DEV_PII_KEY = "local-dev-key-0123456789abcdef00"  # 32 ASCII characters -> AES-256

ENGINES = ("classic", "connect", "emr")
EXECUTORS = ("auto", "in_process", "multiprocess")
SECRET_PROVIDERS = ("dev", "env", "aws_secretsmanager")

__all__ = [
    "DEV_PII_KEY",
    "DEV_PII_SALT",
    "ENVIRONMENTS",
    "EmrSettings",
    "ExecutorSettings",
    "SecretsSettings",
    "Settings",
    "SettingsError",
    "SparkSettings",
    "load_settings",
    "validate_pii_key",
]


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class SparkSettings:
    """Which Spark engine: ``classic`` (embedded ``local[*]`` or a cluster master URL),
    ``connect`` (a Spark Connect server) or ``emr`` (EMR Serverless through Dagster Pipes)."""

    engine: str = "classic"
    master: str = "local[*]"
    remote: str | None = None
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str = "in_process"  # resolved: in_process | multiprocess
    max_concurrent: int = 2


@dataclass(frozen=True)
class SecretsSettings:
    provider: str = "dev"
    region: str | None = None
    endpoint_url: str | None = None
    pii_salt: str | None = None  # secret reference "<name or ARN>[#field]"
    pii_key: str | None = None


@dataclass(frozen=True)
class EmrSettings:
    region: str | None
    application_id: str
    execution_role_arn: str
    artifacts_uri: str
    logs_uri: str | None = None
    log_group: str | None = None
    timeout_minutes: int = 180
    spark_conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    env: str
    landing_uri: str
    lake_uri: str
    pii_salt: str
    pii_key: str
    spark: SparkSettings = field(default_factory=SparkSettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    emr: EmrSettings | None = None
    #: where the PII values came from: ``value`` (dev default / given), ``env`` (ETL_PII_SALT and
    #: ETL_PII_KEY of this process), ``aws_secretsmanager`` (the references in ``secrets``)
    pii_source: str = "value"
    config_file: str = ""

    def __repr__(self) -> str:  # never print secrets
        return (
            f"Settings(env={self.env!r}, landing_uri={self.landing_uri!r}, lake_uri={self.lake_uri!r}, "
            f"engine={self.spark.engine!r}, executor={self.executor.kind!r}, pii_source={self.pii_source!r})"
        )

    __str__ = __repr__


def _check_uri(name: str, value: str) -> str:
    try:
        parse_uri(value)
    except ValueError as e:
        raise SettingsError(f"{name}: {e}") from None
    return value


def validate_pii_key(name: str, key: str) -> str:
    if len(key) not in (16, 24, 32) or not key.isascii():
        raise SettingsError(f"{name} must be 16, 24 or 32 ASCII characters (got {len(key)} characters)")
    return key


# -- pieces ----------------------------------------------------------------------------------


def _choice(cfg: EnvironmentConfig, key: str, allowed: tuple[str, ...], default: str) -> str:
    value = str(cfg.get(key, default))
    if value not in allowed:
        raise SettingsError(f"{cfg.origin(key)}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _int(cfg: EnvironmentConfig, key: str, default: int, minimum: int = 1) -> int:
    raw = cfg.get(key, default)
    try:
        value = int(str(raw))
    except ValueError:
        raise SettingsError(f"{cfg.origin(key)}={raw!r}: expected an integer") from None
    if value < minimum:
        raise SettingsError(f"{cfg.origin(key)}={value}: must be at least {minimum}")
    return value


def _str_map(cfg: EnvironmentConfig, key: str) -> dict[str, str]:
    raw = cfg.get(key, {}) or {}
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{cfg.origin(key)}: expected a mapping of Spark settings")
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in raw.items()}


def _uri(cfg: EnvironmentConfig, key: str, default: str) -> str:
    value = str(cfg.get(key, default))
    if key not in cfg.from_env and "://" not in value and not os.path.isabs(value):
        value = str(REPO_ROOT / value)  # relative paths in the YAML: relative to the project root
    return _check_uri(cfg.origin(key), value)


_REMOTE_RE = re.compile(r"^sc://[^/:\s]+(:\d+)?(/.*)?$")
_MASTER_RE = re.compile(r"^(local(\[(\*|\d+)(,\d+)?\])?|local-cluster\[.+\]|spark://\S+|yarn|k8s://\S+|mesos://\S+)$")


def _spark(cfg: EnvironmentConfig) -> SparkSettings:
    # ETL_SPARK_REMOTE / ETL_SPARK_MASTER alone select their engine; ETL_SPARK_ENGINE wins.
    engine = cfg.get("spark.engine", "classic")
    if "spark.engine" not in cfg.from_env:
        if "spark.remote" in cfg.from_env:
            engine = "connect"
        elif "spark.master" in cfg.from_env:
            engine = "classic"
    if engine not in ENGINES:
        raise SettingsError(f"{cfg.origin('spark.engine')}={engine!r}: expected one of {', '.join(ENGINES)}")
    master = str(cfg.get("spark.master", "local[*]"))
    remote = cfg.get("spark.remote")
    if engine == "classic" and not _MASTER_RE.match(master):
        raise SettingsError(
            f"{cfg.origin('spark.master')}={master!r}: not a Spark master URL "
            "(local[*], spark://host:7077, yarn, k8s://...)"
        )
    if engine == "connect":
        if not remote:
            raise SettingsError(f"{cfg.origin('spark.remote')} is required with the Spark Connect engine")
        if not _REMOTE_RE.match(str(remote)):
            raise SettingsError(
                f"{cfg.origin('spark.remote')}={remote!r}: not a Spark Connect URL (sc://host:15002)"
            )
    return SparkSettings(
        engine=engine,
        master=master,
        remote=str(remote) if engine == "connect" else None,
        shuffle_partitions=_int(cfg, "spark.shuffle_partitions", 8),
        driver_memory=str(cfg.get("spark.driver_memory", "4g")),
        conf=_str_map(cfg, "spark.conf"),
    )


def _executor(cfg: EnvironmentConfig, spark: SparkSettings) -> ExecutorSettings:
    kind = _choice(cfg, "executor.kind", EXECUTORS, "auto")
    if kind == "auto":
        # A classic engine lives in the run's process: one process, one SparkSession, one JVM.
        # Spark Connect clients are thin: steps in parallel processes share the server's engine.
        kind = "multiprocess" if spark.engine == "connect" else "in_process"
    return ExecutorSettings(kind=kind, max_concurrent=_int(cfg, "executor.max_concurrent", 2))


def _emr(cfg: EnvironmentConfig) -> EmrSettings:
    missing = [k for k in ("emr.application_id", "emr.execution_role_arn", "emr.artifacts_uri") if not cfg.get(k)]
    if missing:
        raise SettingsError(
            "the EMR engine needs " + ", ".join(cfg.origin(k) for k in missing) + " (not set)"
        )
    artifacts = str(cfg.get("emr.artifacts_uri")).rstrip("/")
    if not artifacts.startswith("s3://"):
        raise SettingsError(f"{cfg.origin('emr.artifacts_uri')}={artifacts!r}: expected s3://bucket/prefix")
    _check_uri(cfg.origin("emr.artifacts_uri"), artifacts)
    logs = cfg.get("emr.logs_uri")
    if logs and not str(logs).startswith("s3://"):
        raise SettingsError(f"{cfg.origin('emr.logs_uri')}={logs!r}: expected s3://bucket/prefix")
    role = str(cfg.get("emr.execution_role_arn"))
    if not role.startswith("arn:"):
        raise SettingsError(f"{cfg.origin('emr.execution_role_arn')}={role!r}: expected an IAM role ARN")
    return EmrSettings(
        region=cfg.get("emr.region"),
        application_id=str(cfg.get("emr.application_id")),
        execution_role_arn=role,
        artifacts_uri=artifacts,
        logs_uri=str(logs) if logs else None,
        log_group=cfg.get("emr.log_group"),
        timeout_minutes=_int(cfg, "emr.timeout_minutes", 180),
        spark_conf=_str_map(cfg, "emr.spark_conf"),
    )


def _pii(
    cfg: EnvironmentConfig, env: Mapping[str, str], from_process_env: bool
) -> tuple[str, str, str, SecretsSettings]:
    provider = _choice(cfg, "secrets.provider", SECRET_PROVIDERS, "dev")
    secrets = SecretsSettings(
        provider=provider,
        region=cfg.get("secrets.region"),
        endpoint_url=cfg.get("secrets.endpoint_url"),
        pii_salt=cfg.get("secrets.pii_salt"),
        pii_key=cfg.get("secrets.pii_key"),
    )
    name = cfg.name
    salt, key = env.get("ETL_PII_SALT") or None, env.get("ETL_PII_KEY") or None
    source = "env" if from_process_env else "value"
    if provider == "dev":
        if name != "local":
            raise SettingsError(
                f"{cfg.origin('secrets.provider')}=dev: development PII values are only allowed with "
                f"ETL_ENV=local; use aws_secretsmanager (or env) for ETL_ENV={name}"
            )
        if not (salt and key):
            source = "value"  # at least one documented development value
        salt, key = salt or DEV_PII_SALT, key or DEV_PII_KEY
    elif provider == "env":
        missing = [n for n, v in (("ETL_PII_SALT", salt), ("ETL_PII_KEY", key)) if not v]
        if missing:
            raise SettingsError(
                f"ETL_ENV={name} needs real secrets: {', '.join(missing)} not set "
                "(development defaults are only allowed with ETL_ENV=local)"
            )
    else:  # aws_secretsmanager; values injected by the deployment (ETL_PII_SALT/KEY) take precedence
        from etl_assets.secrets import SecretError, fetch_secret

        if salt and key:
            pass
        else:
            source = "aws_secretsmanager"
            values = {}
            for setting, ref_key, given in (("ETL_PII_SALT", "secrets.pii_salt", salt),
                                            ("ETL_PII_KEY", "secrets.pii_key", key)):
                if given:
                    raise SettingsError(
                        f"ETL_ENV={name}: {setting} is set but "
                        f"{'ETL_PII_KEY' if setting == 'ETL_PII_SALT' else 'ETL_PII_SALT'} is not; "
                        "inject both or neither (then both come from AWS Secrets Manager)"
                    )
                ref = cfg.get(ref_key)
                if not ref:
                    raise SettingsError(
                        f"ETL_ENV={name} needs the secret name of {setting}: {cfg.origin(ref_key)} is not set"
                    )
                try:
                    values[setting] = fetch_secret(
                        str(ref), setting=f"{setting} ({cfg.origin(ref_key)})",
                        region=secrets.region, endpoint_url=secrets.endpoint_url,
                    )
                except SecretError as e:
                    raise SettingsError(str(e)) from None
            salt, key = values["ETL_PII_SALT"], values["ETL_PII_KEY"]
    if name != "local" and (salt == DEV_PII_SALT or key == DEV_PII_KEY):
        raise SettingsError(f"ETL_ENV={name} refuses the documented development PII salt/key")
    validate_pii_key("ETL_PII_KEY", key)
    return salt, key, source, secrets


# -- entry point -----------------------------------------------------------------------------


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings of ``ETL_ENV`` from ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    name = env.get("ETL_ENV", "local") or "local"
    if name not in ENVIRONMENTS:
        raise SettingsError(f"ETL_ENV={name!r}: expected one of {', '.join(ENVIRONMENTS)}")
    try:
        cfg = load_environment(name, env)
    except ConfigError as e:
        raise SettingsError(str(e)) from None
    landing = _uri(cfg, "landing_uri", "data/landing")
    lake = _uri(cfg, "lake_uri", "data/lake")
    spark = _spark(cfg)
    executor = _executor(cfg, spark)
    emr = _emr(cfg) if spark.engine == "emr" else None
    if emr is not None and cfg.get("secrets.provider") != "aws_secretsmanager":
        raise SettingsError(
            f"{cfg.origin('secrets.provider')}={cfg.get('secrets.provider')!r}: the EMR engine's driver reads the "
            "PII salt/key from AWS Secrets Manager itself; use aws_secretsmanager"
        )
    salt, key, source, secrets = _pii(cfg, env, from_process_env=environ is None)
    return Settings(
        env=name,
        landing_uri=landing,
        lake_uri=lake,
        pii_salt=salt,
        pii_key=key,
        spark=spark,
        executor=executor,
        secrets=secrets,
        emr=emr,
        pii_source=source,
        config_file=str(cfg.file),
    )
