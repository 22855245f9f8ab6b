"""The one place that reads the environment.

Laptop defaults (SQLite and an embedded Redis under `instance/`, secrets
generated once into `instance/` with 0600 permissions) keep `make run` to a
single command; a real deployment (DATABASE_URL or REDIS_URL set) must bring
its own secrets and is refused at start-up otherwise.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path

from cryptography.fernet import Fernet

from xtag.core import fastjson
from xtag.core.errors import Invalid
from xtag.pipeline import alerts, inbox, retention


class ConfigError(RuntimeError):
    """Start-up configuration that cannot work; the message says what to set."""


DEFAULT_RETRY_DELAYS = "30,120,600,3600,21600"
MAKE_FERNET_KEY = (
    "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)
MAKE_SECRET_KEY = "python -c 'import secrets; print(secrets.token_hex(32))'"


def _int(environ, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def _choice(environ, name: str, choices: tuple[str, ...]) -> str:
    """One of `choices`; the first is the default."""
    value = (environ.get(name) or choices[0]).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _networks(environ, name: str, default: str) -> list:
    """Comma-separated addresses or CIDR networks; empty allows none."""
    raw = environ.get(name)
    try:
        return [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in (default if raw is None else raw).split(",")
            if part.strip()
        ]
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _int_list(environ, name: str, default: str) -> list[int]:
    raw = environ.get(name) or default
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"{name} must list at least one non-negative number of seconds")
    return values


def _webhook_url(environ, name: str) -> str | None:
    """An http(s) URL, or None when unset; the error never repeats it (a secret)."""
    raw = (environ.get(name) or "").strip()
    try:
        return alerts.check_webhook_url(raw) if raw else None
    except Invalid:
        raise ConfigError(f"{name} must be an http or https URL") from None


def _instance_secret(instance: Path, filename: str, make) -> str:
    """Read a generated secret from instance/, creating it (0600) the first time."""
    path = instance / filename
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
    return path.read_text().strip()


def _fernet_keys(raw: str) -> list[str]:
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise ConfigError(
                "XTAG_ENCRYPTION_KEYS holds a value that is not a Fernet key; generate one with "
                + MAKE_FERNET_KEY
            ) from None
    if not keys:
        raise ConfigError("XTAG_ENCRYPTION_KEYS is empty")
    return keys


def from_env(environ, instance_path: str) -> dict:
    """Flask config values for this environment."""
    instance = Path(instance_path)
    database_url = environ.get("DATABASE_URL") or ""
    redis_url = environ.get("REDIS_URL") or ""
    deployed = bool(database_url or redis_url)

    secret_key = environ.get("SECRET_KEY") or ""
    keys = environ.get("XTAG_ENCRYPTION_KEYS") or ""
    if deployed:
        missing = []
        if not secret_key:
            missing.append(f"SECRET_KEY (generate one with {MAKE_SECRET_KEY})")
        if not keys:
            missing.append(f"XTAG_ENCRYPTION_KEYS (generate one with {MAKE_FERNET_KEY})")
        if missing:
            raise ConfigError(
                "DATABASE_URL or REDIS_URL is set, so this is a deployment and generated secrets "
                "are not used; set " + " and ".join(missing)
            )
    else:
        secret_key = secret_key or _instance_secret(
            instance, "secret_key", lambda: secrets.token_hex(32)
        )
        keys = keys or _instance_secret(
            instance, "encryption_keys", lambda: Fernet.generate_key().decode()
        )

    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgres://") :]
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]

    return {
        "SQLALCHEMY_DATABASE_URI": database_url or f"sqlite:///{instance / 'xtag.db'}",
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_pre_ping": True,
            "json_serializer": fastjson.dumps,
            "json_deserializer": fastjson.loads,
        },
        "REDIS_URL": redis_url or None,
        "SECRET_KEY": secret_key,
        "XTAG_ENCRYPTION_KEYS": _fernet_keys(keys),
        "XTAG_X_API_BASE": (environ.get("XTAG_X_API_BASE") or "https://ads-api.x.com").rstrip("/"),
        "XTAG_X_API_VERSION": environ.get("XTAG_X_API_VERSION") or "12",
        "XTAG_X_OAUTH1_BASE": (environ.get("XTAG_X_OAUTH1_BASE") or "https://api.x.com").rstrip(
            "/"
        ),
        "XTAG_X_OAUTH2_AUTHORIZE_URL": environ.get("XTAG_X_OAUTH2_AUTHORIZE_URL")
        or "https://x.com/i/oauth2/authorize",
        "XTAG_X_OAUTH2_TOKEN_URL": environ.get("XTAG_X_OAUTH2_TOKEN_URL")
        or "https://api.x.com/2/oauth2/token",
        "XTAG_RETRY_DELAYS": _int_list(environ, "XTAG_RETRY_DELAYS", DEFAULT_RETRY_DELAYS),
        "XTAG_BATCH_WINDOW_MS": _int(environ, "XTAG_BATCH_WINDOW_MS", 1000),
        "XTAG_TRUSTED_PROXIES": _int(environ, "XTAG_TRUSTED_PROXIES", 0),
        "XTAG_SITE_CACHE_SECONDS": _int(environ, "XTAG_SITE_CACHE_SECONDS", 10),
        "XTAG_WRITE_KEY_GRACE_HOURS": _int(environ, "XTAG_WRITE_KEY_GRACE_HOURS", 24),
        "XTAG_ALERT_WEBHOOK_URL": _webhook_url(environ, "XTAG_ALERT_WEBHOOK_URL"),
        "XTAG_X_TIMEOUT_SECONDS": _int(environ, "XTAG_X_TIMEOUT_SECONDS", 30, minimum=1),
        "XTAG_INBOX_CLAIM_MS": _int(environ, "XTAG_INBOX_CLAIM_MS", 60_000, minimum=1),
        "XTAG_INBOX_SHARDS": _int(
            environ, "XTAG_INBOX_SHARDS", 1, minimum=1, maximum=inbox.MAX_SHARDS
        ),
        "XTAG_STALE_SENDING_SECONDS": _int(environ, "XTAG_STALE_SENDING_SECONDS", 180, minimum=1),
        "XTAG_LOG_FORMAT": _choice(environ, "XTAG_LOG_FORMAT", ("json", "text")),
        "XTAG_METRICS_TOKEN": environ.get("XTAG_METRICS_TOKEN") or None,
        "XTAG_METRICS_ALLOW": _networks(environ, "XTAG_METRICS_ALLOW", "127.0.0.1/32,::1/128"),
        "XTAG_READY_WORKER_SECONDS": _int(environ, "XTAG_READY_WORKER_SECONDS", 30, minimum=6),
        "XTAG_SITE_RATE_LIMIT": _int(environ, "XTAG_SITE_RATE_LIMIT", 1000),
        "XTAG_API_RATE_LIMIT": _int(environ, "XTAG_API_RATE_LIMIT", 600),
        **{
            policy.setting: _int(environ, policy.setting, policy.default_days, minimum=1)
            for policy in retention.POLICIES
        },
        "SESSION_COOKIE_HTTPONLY": True,
        # idle sessions end after XTAG_SESSION_IDLE_MINUTES; any after XTAG_SESSION_MAX_HOURS
        "PERMANENT_SESSION_LIFETIME": timedelta(
            minutes=_int(environ, "XTAG_SESSION_IDLE_MINUTES", 120, minimum=1)
        ),
        "XTAG_SESSION_MAX_HOURS": _int(environ, "XTAG_SESSION_MAX_HOURS", 12, minimum=1),
        "SESSION_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_TIME_LIMIT": None,
    }
