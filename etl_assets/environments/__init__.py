"""One YAML file per environment (``local.yaml``, ``staging.yaml``, ``prod.yaml`` beside this
file), selected by ``ETL_ENV``; environment variables override single values.

``load_environment(name, environ)`` returns the merged configuration as a plain dict together
with where each value came from, so that a validation error can name the setting the way the
user would fix it: the environment variable when it was set, else ``<env>.yaml: <key>``.
Validation and secrets live in ``etl_assets.settings``; this module only reads and merges.

``ETL_CONFIG_FILE`` points at a YAML file outside the package that replaces the packaged one
(same keys), for deployments that keep their configuration next to the deployment.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

ENV_DIR = Path(__file__).resolve().parent
ENVIRONMENTS = ("local", "staging", "prod")


class ConfigError(ValueError):
    """The configuration file cannot be read; the message names it."""


def _csv_conf(value: str) -> dict[str, str]:
    """``"k=v,k2=v2"`` -> ``{"k": "v", "k2": "v2"}``."""
    out: dict[str, str] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"expected key=value pairs separated by commas, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


# environment variable -> (dotted key in the YAML, parser). The one list of overrides.
OVERRIDES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "ETL_LANDING_URI": ("landing_uri", str),
    "ETL_LAKE_URI": ("lake_uri", str),
    "ETL_SPARK_ENGINE": ("spark.engine", str),
    "ETL_SPARK_MASTER": ("spark.master", str),
    "ETL_SPARK_REMOTE": ("spark.remote", str),
    "ETL_SPARK_SHUFFLE_PARTITIONS": ("spark.shuffle_partitions", str),
    "ETL_SPARK_DRIVER_MEMORY": ("spark.driver_memory", str),
    "ETL_SPARK_CONF": ("spark.conf", _csv_conf),
    "ETL_EXECUTOR": ("executor.kind", str),
    "ETL_MAX_CONCURRENT_STEPS": ("executor.max_concurrent", str),
    "ETL_SECRETS_PROVIDER": ("secrets.provider", str),
    "ETL_SECRETS_REGION": ("secrets.region", str),
    "ETL_SECRETS_ENDPOINT_URL": ("secrets.endpoint_url", str),
    "ETL_PII_SALT_SECRET": ("secrets.pii_salt", str),
    "ETL_PII_KEY_SECRET": ("secrets.pii_key", str),
    "ETL_EMR_REGION": ("emr.region", str),
    "ETL_EMR_APPLICATION_ID": ("emr.application_id", str),
    "ETL_EMR_EXECUTION_ROLE_ARN": ("emr.execution_role_arn", str),
    "ETL_EMR_ARTIFACTS_URI": ("emr.artifacts_uri", str),
    "ETL_EMR_LOGS_URI": ("emr.logs_uri", str),
    "ETL_EMR_LOG_GROUP": ("emr.log_group", str),
    "ETL_EMR_TIMEOUT_MINUTES": ("emr.timeout_minutes", str),
}
ENV_VAR_OF: dict[str, str] = {key: var for var, (key, _) in OVERRIDES.items()}


@dataclass
class EnvironmentConfig:
    """The merged configuration of one environment and the origin of each overridden key."""

    name: str
    file: Path
    values: dict[str, Any]
    from_env: dict[str, str] = field(default_factory=dict)  # dotted key -> env var that set it

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.values
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return default if node is None else node

    def origin(self, dotted: str) -> str:
        """How to name a setting in an error: ``ETL_LAKE_URI`` or ``staging.yaml: lake_uri``."""
        var = self.from_env.get(dotted)
        if var:
            return var
        hint = f" (or {ENV_VAR_OF[dotted]})" if dotted in ENV_VAR_OF else ""
        return f"{self.file.name}: {dotted}{hint}"


def config_file(name: str, environ: Mapping[str, str] | None = None) -> Path:
    override = (environ or {}).get("ETL_CONFIG_FILE")
    return Path(override) if override else ENV_DIR / f"{name}.yaml"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read environment configuration {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _set(values: dict[str, Any], dotted: str, value: Any) -> None:
    node = values
    parts = dotted.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
        node[parts[-1]] = {**node[parts[-1]], **value}  # ETL_SPARK_CONF adds to the YAML conf
    else:
        node[parts[-1]] = value


def load_environment(name: str, environ: Mapping[str, str]) -> EnvironmentConfig:
    """Read ``<name>.yaml`` (or ``ETL_CONFIG_FILE``) and apply the environment overrides."""
    if name not in ENVIRONMENTS:
        raise ConfigError(f"ETL_ENV={name!r}: expected one of {', '.join(ENVIRONMENTS)}")
    path = config_file(name, environ)
    cfg = EnvironmentConfig(name=name, file=path, values=copy.deepcopy(_read_yaml(path)))
    for var, (dotted, parse) in OVERRIDES.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        try:
            value = parse(raw)
        except ValueError as e:
            raise ConfigError(f"{var}: {e}") from None
        _set(cfg.values, dotted, value)
        cfg.from_env[dotted] = var
    return cfg
