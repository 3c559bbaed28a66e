"""Platform settings from the environment, validated when the code location loads.

| variable | meaning | local default |
| --- | --- | --- |
| ``ETL_ENV`` | ``local`` / ``staging`` / ``prod`` | ``local`` |
| ``ETL_LANDING_URI`` | landing zone root: folder, ``file://`` or ``s3://bucket/prefix`` | ``<repo>/data/landing`` |
| ``ETL_LAKE_URI`` | lake root | ``<repo>/data/lake`` |
| ``ETL_PII_SALT`` | salt of ``email_hash`` | ``DEV_PII_SALT`` (local only) |
| ``ETL_PII_KEY`` | AES key, 16/24/32 ASCII characters | ``DEV_PII_KEY`` (local only) |

Outside ``local`` the salt and key have no default: a missing one is a start-up error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from etl_assets.storage import parse_uri

REPO_ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = ("local", "staging", "prod")

# Development-only values, documented in the README. Never valid outside ETL_ENV=local.
DEV_PII_SALT = "local-dev-salt-not-secret"
DEV_PII_KEY = "local-dev-key-0123456789abcdef00"  # 32 ASCII characters -> AES-256


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    env: str
    landing_uri: str
    lake_uri: str
    pii_salt: str
    pii_key: str

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(env={self.env!r}, landing_uri={self.landing_uri!r}, lake_uri={self.lake_uri!r})"

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


def load_settings(environ: dict | None = None) -> Settings:
    env = os.environ if environ is None else environ
    name = env.get("ETL_ENV", "local") or "local"
    if name not in ENVIRONMENTS:
        raise SettingsError(f"ETL_ENV={name!r}: expected one of {', '.join(ENVIRONMENTS)}")
    landing = env.get("ETL_LANDING_URI") or str(REPO_ROOT / "data" / "landing")
    lake = env.get("ETL_LAKE_URI") or str(REPO_ROOT / "data" / "lake")
    salt = env.get("ETL_PII_SALT")
    key = env.get("ETL_PII_KEY")
    if name == "local":
        salt = salt or DEV_PII_SALT
        key = key or DEV_PII_KEY
    else:
        missing = [n for n, v in (("ETL_PII_SALT", salt), ("ETL_PII_KEY", key)) if not v]
        if missing:
            raise SettingsError(
                f"ETL_ENV={name} needs real secrets: {', '.join(missing)} not set "
                "(development defaults are only allowed with ETL_ENV=local)"
            )
        if salt == DEV_PII_SALT or key == DEV_PII_KEY:
            raise SettingsError(f"ETL_ENV={name} refuses the documented development PII salt/key")
    return Settings(
        env=name,
        landing_uri=_check_uri("ETL_LANDING_URI", landing),
        lake_uri=_check_uri("ETL_LAKE_URI", lake),
        pii_salt=salt,
        pii_key=validate_pii_key("ETL_PII_KEY", key),
    )
