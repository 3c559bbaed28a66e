"""Secrets from AWS Secrets Manager: fetched once per process, never logged.

A secret reference is ``<secret name or ARN>`` (the whole ``SecretString``) or
``<secret name or ARN>#<field>`` (one field of a JSON ``SecretString``), for example
``etl/prod/pii#salt``. Errors name the setting and the secret, never the value.

Which endpoint: ``endpoint_url`` when given (tests, VPC endpoints), else boto3's own resolution
(``AWS_ENDPOINT_URL_SECRETS_MANAGER``, ``AWS_ENDPOINT_URL``, then AWS). Credentials: boto3's
usual chain (instance/task role, ``AWS_PROFILE``, ...).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass


class SecretError(ValueError):
    """A secret is missing, unreadable or malformed; the message names it, never its value."""


@dataclass(frozen=True)
class SecretRef:
    secret_id: str
    field: str | None = None

    @classmethod
    def parse(cls, ref: str) -> "SecretRef":
        ref = (ref or "").strip()
        secret_id, _, fld = ref.partition("#")
        if not secret_id:
            raise SecretError(f"empty secret reference {ref!r}: expected '<name or ARN>[#<field>]'")
        return cls(secret_id=secret_id, field=fld or None)

    def __str__(self) -> str:
        return self.secret_id + (f"#{self.field}" if self.field else "")


_cache: dict[tuple[str, str | None, str | None], str] = {}
_lock = threading.Lock()


def clear_cache() -> None:
    with _lock:
        _cache.clear()


@contextlib.contextmanager
def _quiet_botocore():
    """botocore logs response bodies at DEBUG level: keep a secret's out of any log."""
    loggers = [logging.getLogger(n) for n in ("botocore", "boto3", "urllib3")]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        if lg.getEffectiveLevel() < logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, before):
            lg.setLevel(lvl)


def _client(region: str | None, endpoint_url: str | None):
    import boto3  # only where secrets are used

    return boto3.session.Session().client("secretsmanager", region_name=region, endpoint_url=endpoint_url)


def _secret_string(secret_id: str, region: str | None, endpoint_url: str | None, setting: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    key = (secret_id, region, endpoint_url)
    with _lock:
        if key in _cache:
            return _cache[key]
    where = f"AWS Secrets Manager{f' ({region})' if region else ''}"
    try:
        with _quiet_botocore():
            resp = _client(region, endpoint_url).get_secret_value(SecretId=secret_id)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise SecretError(f"{setting}: secret {secret_id!r} not found in {where}") from None
        if code in ("AccessDeniedException", "UnrecognizedClientException"):
            raise SecretError(f"{setting}: not allowed to read secret {secret_id!r} from {where} ({code})") from None
        raise SecretError(f"{setting}: cannot read secret {secret_id!r} from {where}: {code}") from None
    except NoCredentialsError:
        raise SecretError(f"{setting}: no AWS credentials to read secret {secret_id!r} from {where}") from None
    except NoRegionError:
        raise SecretError(f"{setting}: no AWS region to read secret {secret_id!r} (set secrets.region)") from None
    except BotoCoreError as e:  # endpoint unreachable, ...
        raise SecretError(f"{setting}: cannot reach {where} for secret {secret_id!r}: {type(e).__name__}") from None
    value = resp.get("SecretString")
    if value is None:
        raise SecretError(f"{setting}: secret {secret_id!r} has no SecretString (binary secrets are not supported)")
    with _lock:
        _cache[key] = value
    return value


def fetch_secret(ref: str | SecretRef, *, setting: str, region: str | None = None,
                 endpoint_url: str | None = None) -> str:
    """The value of ``ref``; ``setting`` names what it is for in error messages."""
    r = ref if isinstance(ref, SecretRef) else SecretRef.parse(ref)
    text = _secret_string(r.secret_id, region, endpoint_url, setting)
    if r.field is None:
        value = text
    else:
        try:
            doc = json.loads(text)
        except ValueError:
            raise SecretError(
                f"{setting}: secret {r.secret_id!r} is not JSON, so it has no field {r.field!r}"
            ) from None
        if not isinstance(doc, dict) or r.field not in doc:
            raise SecretError(f"{setting}: secret {r.secret_id!r} has no field {r.field!r}")
        value = doc[r.field]
        if not isinstance(value, str):
            raise SecretError(f"{setting}: field {r.field!r} of secret {r.secret_id!r} is not a string")
    if not value:
        raise SecretError(f"{setting}: secret {r} is empty")
    return value
