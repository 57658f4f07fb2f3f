"""Configuration: one object, read once from the environment (docs/contracts.md §6).

`.env` is read in development (python-dotenv) without overriding variables already set.
A missing or malformed setting raises `ConfigError`, whose message is one line naming it;
the entry points print that line and exit instead of showing a traceback.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import overload
from urllib.parse import urlsplit, urlunsplit

from domain.notifications import RETRY_SCHEDULE
from domain.policy import DEFAULT_POLICY, RETRY_AFTER_BLOCK, Policy

# Defaults, each with the reason it is what it is.
# Persona documents no tolerance; 5 minutes absorbs clock skew and never rejects a retry,
# because `t` is the send time of each attempt.
DEFAULT_SIGNATURE_TOLERANCE = 300
# Persona's payloads are tens of KB (the sandbox capture is 65 KB); 1 MiB leaves room and bounds memory.
DEFAULT_MAX_WEBHOOK_BYTES = 1024 * 1024
# SQLite embedded under var/ so a fresh clone runs without a database server.
# The file settings are read from when the environment lacks them (see _environ).
ENV_FILE = "PERSONA_EVENTS_ENV_FILE"
DEFAULT_DATABASE_URL = "sqlite:///var/persona-events.db"
# Webhook events; named so `rq info` reads clearly next to a host app's queues.
DEFAULT_EVENTS_QUEUE = "persona-events"
# Verisoul syncs on a queue of their own, listed after the events queue: a worker takes an event first,
# so a slow or failing Verisoul cannot hold back the record.
DEFAULT_SYNC_QUEUE = "persona-sync"
# Persona retries for about 51 h; the dedupe mark must outlive that window with margin (>= 7 days).
DEFAULT_DEDUPE_TTL = 7 * 24 * 3600
DEFAULT_PERSONA_API_URL = "https://api.withpersona.com"
# Verisoul allows 300 requests a minute per key; stay a little under it to absorb clock skew.
DEFAULT_VERISOUL_RATE_LIMIT = 290
VERISOUL_FLAVORS = ("account", "lists")
# Persona expires an unfinished inquiry 24 h after creation unless its template says otherwise.
DEFAULT_INQUIRY_EXPIRY_HOURS = 24
# Webhooks for an expiry can take a while (Persona retries for ~51 h); an hour past the window, ask.
DEFAULT_RECONCILE_GRACE_MINUTES = 60
# The gate resumes an inquiry that expired this recently rather than start the user over (docs/contracts.md §8).
DEFAULT_GATE_RESUME_EXPIRED_HOURS = 24
# Notifications to the host: a queue of their own, so a slow or failing host holds back neither events nor syncs.
DEFAULT_NOTIFY_QUEUE = "persona-notify"
# Sentry groups reports by environment; one deployment is production unless told otherwise.
DEFAULT_SENTRY_ENVIRONMENT = "production"


def shown_url(url: str) -> str:
    """The URL with its password, if any, replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


# .env.example's placeholder: a service started with it would refuse every real webhook as unsigned.
EXAMPLE_WEBHOOK_SECRET = "wbhsec_replace_me"


@dataclass(frozen=True)
class RecordSettings:
    """What writing a user's record depends on in a deployment: the decision policy (docs/contracts.md §5), whether
    Verisoul is configured (syncs are queued) and whether the host is notified of changes (the outbox, §9)."""

    policy: Policy = DEFAULT_POLICY
    verisoul: bool = True
    notify: bool = False


DEFAULT_SETTINGS = RecordSettings()


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line naming it."""


@dataclass(frozen=True)
class Config:
    webhook_secrets: tuple[str, ...] = field(repr=False)
    # URLs may carry passwords: kept out of repr() like the secrets.
    redis_url: str = field(repr=False)
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    signature_tolerance: int = DEFAULT_SIGNATURE_TOLERANCE
    max_webhook_bytes: int = DEFAULT_MAX_WEBHOOK_BYTES
    events_queue: str = DEFAULT_EVENTS_QUEUE
    sync_queue: str = DEFAULT_SYNC_QUEUE
    notify_queue: str = DEFAULT_NOTIFY_QUEUE
    dedupe_ttl: int = DEFAULT_DEDUPE_TTL
    persona_api_key: str | None = field(default=None, repr=False)
    persona_api_url: str = DEFAULT_PERSONA_API_URL
    verisoul_api_url: str | None = None
    verisoul_api_key: str | None = field(default=None, repr=False)
    verisoul_api_flavor: str = "account"
    verisoul_rate_limit: int = DEFAULT_VERISOUL_RATE_LIMIT
    admin_api_token: str | None = field(default=None, repr=False)
    # The host application's token: it may read a user's record (and ask the inquiry gate), nothing else.
    host_api_token: str | None = field(default=None, repr=False)
    # The host's notifications (docs/contracts.md §9): its URL, and the Standard Webhooks secret (whsec_ + base64).
    host_webhook_url: str | None = None
    host_webhook_secret: str | None = field(default=None, repr=False)
    host_webhook_retries: tuple[int, ...] = RETRY_SCHEDULE
    worker_metrics_port: int | None = None  # a worker serves its host's metrics here (no web process there)
    sentry_dsn: str | None = field(default=None, repr=False)  # errors reported to Sentry when set
    sentry_environment: str = DEFAULT_SENTRY_ENVIRONMENT
    inquiry_expiry_hours: int = DEFAULT_INQUIRY_EXPIRY_HOURS
    gate_resume_expired_hours: int = DEFAULT_GATE_RESUME_EXPIRED_HOURS
    reconcile_grace_minutes: int = DEFAULT_RECONCILE_GRACE_MINUTES
    retry_after_block: bool = RETRY_AFTER_BLOCK
    # Logged events of decided inquiries older than this many days are deleted daily (docs/contracts.md §10); None: kept.
    event_retention_days: int | None = None

    @property
    def policy(self) -> Policy:
        """The decision policy (docs/contracts.md §5) with this deployment's settings."""
        return Policy(retry_after_block=self.retry_after_block)

    @property
    def record_settings(self) -> RecordSettings:
        return RecordSettings(self.policy, self.verisoul_api_url is not None, self.host_webhook_url is not None)

    @property
    def queues(self) -> list[str]:
        """In the order a worker serves them: events, then Verisoul syncs, then the host's notifications."""
        return [self.events_queue, self.sync_queue, self.notify_queue]

    @property
    def stores(self) -> str:
        """Which database and Redis this configuration acts on, passwords hidden: what a command prints
        first, so that one run from the wrong shell (another `.env`) says so."""
        return f"database {shown_url(self.database_url)}, Redis {shown_url(self.redis_url)}"

    @property
    def reconcile_after(self) -> timedelta:
        """How long an inquiry may stay created or pending before reconciliation asks Persona about it."""
        return timedelta(hours=self.inquiry_expiry_hours, minutes=self.reconcile_grace_minutes)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required but not set")
    return value


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name} must be a TCP port (1-65535), got {raw!r}")
    return int(raw)


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _optional_positive_int(env: Mapping[str, str], name: str) -> int | None:
    """A positive integer, or None when unset (the feature is off)."""
    return _positive_int(env, name, 0) or None if env.get(name, "").strip() else None


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in TRUE_WORDS + FALSE_WORDS:
        raise ConfigError(f"{name} must be true or false, got {env[name].strip()!r}")
    return raw in TRUE_WORDS


def _retries(env: Mapping[str, str]) -> tuple[int, ...]:
    raw = env.get("HOST_WEBHOOK_RETRIES", "").strip()
    if not raw:
        return RETRY_SCHEDULE
    waits = [part.strip() for part in raw.split(",")]
    if not all(wait.isdigit() and int(wait) > 0 for wait in waits):
        raise ConfigError(f"HOST_WEBHOOK_RETRIES must be positive whole seconds, comma-separated, got {raw!r}")
    return tuple(int(wait) for wait in waits)


def _host_webhook(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """HOST_WEBHOOK_URL and HOST_WEBHOOK_SECRET: both or neither; the secret in Standard Webhooks' form."""
    url = _url(env, "HOST_WEBHOOK_URL", ("http", "https"))
    secret = _optional(env, "HOST_WEBHOOK_SECRET")
    if (url is None) != (secret is None):
        missing = "HOST_WEBHOOK_SECRET" if secret is None else "HOST_WEBHOOK_URL"
        raise ConfigError(f"{missing} is required when {'HOST_WEBHOOK_URL' if url else 'HOST_WEBHOOK_SECRET'} is set")
    if secret is not None and not _is_standard_secret(secret):
        raise ConfigError(
            "HOST_WEBHOOK_SECRET must be whsec_ followed by base64 (Standard Webhooks), at least 24 bytes"
        )
    return url, secret


def _is_standard_secret(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(key) >= 24


def _secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _required(env, "PERSONA_WEBHOOK_SECRETS")
    secrets = tuple(s.strip() for s in raw.split(",") if s.strip())
    if not secrets:
        raise ConfigError("PERSONA_WEBHOOK_SECRETS must list at least one secret")
    if EXAMPLE_WEBHOOK_SECRET in secrets:
        raise ConfigError(
            f"PERSONA_WEBHOOK_SECRETS holds .env.example's placeholder {EXAMPLE_WEBHOOK_SECRET}: set the secret "
            "from Persona's dashboard (Webhooks), or unset it for ./scripts/run's development secret"
        )
    return secrets


@overload
def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], default: str) -> str: ...
@overload
def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], default: None = None) -> str | None: ...
def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], default: str | None = None) -> str | None:
    value = _optional(env, name) or default
    scheme, separator, _ = (value or "").partition("://")
    if value is not None and (not separator or scheme.partition("+")[0] not in schemes):
        raise ConfigError(f"{name} must be a URL starting with one of {', '.join(s + '://' for s in schemes)}")
    return value


def _flavor(env: Mapping[str, str]) -> str:
    flavor = _optional(env, "VERISOUL_API_FLAVOR") or "account"
    if flavor not in VERISOUL_FLAVORS:
        raise ConfigError(f"VERISOUL_API_FLAVOR must be one of {', '.join(VERISOUL_FLAVORS)}, got {flavor!r}")
    return flavor


def _database_url(env: Mapping[str, str]) -> str:
    return _url(env, "DATABASE_URL", ("sqlite", "postgresql", "postgres"), DEFAULT_DATABASE_URL)


def _environ(read_dotenv: bool) -> Mapping[str, str]:
    """The process environment, completed (never overridden) from the env file: ENV_FILE names it; unset,
    `.env` found from the working directory upwards; empty, none (the test suite sets it so, so that a
    developer's `.env` cannot leak into the tests)."""
    env_file = os.environ.get(ENV_FILE)
    if read_dotenv and env_file != "":
        from dotenv import find_dotenv, load_dotenv

        # From the working directory, where the Procfile runs, not from this file's (site-packages, once installed).
        load_dotenv(env_file or find_dotenv(usecwd=True), override=False)
    return os.environ


def database_url(env: Mapping[str, str] | None = None) -> str:
    """DATABASE_URL alone, for migrations, which need no other setting."""
    return _database_url(_environ(True) if env is None else env)


def load_config(
    env: Mapping[str, str] | None = None, *, read_dotenv: bool = True, verifies_webhooks: bool = True
) -> Config:
    """Build the Config from `env` (default: the process environment, after reading `.env`). A process
    that verifies no webhook (`verifies_webhooks=False`: replay-event) does without PERSONA_WEBHOOK_SECRETS,
    and checks them only when they are set."""
    if env is None:
        env = _environ(read_dotenv)
    # Checked first (docs/contracts.md §6's order): the web and the workers do nothing without them. All the
    # missing ones are named at once, so a new deployment does not find them one restart at a time.
    required = ["PERSONA_WEBHOOK_SECRETS", "REDIS_URL"] if verifies_webhooks else ["REDIS_URL"]
    missing = [name for name in required if _optional(env, name) is None]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required but not set")
    webhook_secrets = _secrets(env) if verifies_webhooks or _optional(env, "PERSONA_WEBHOOK_SECRETS") else ()
    redis_url = _url(env, "REDIS_URL", ("redis", "rediss", "unix"))
    if redis_url is None:
        raise ConfigError("REDIS_URL is required but not set")
    host_webhook_url, host_webhook_secret = _host_webhook(env)
    return Config(
        webhook_secrets=webhook_secrets,
        redis_url=redis_url,
        database_url=_database_url(env),
        signature_tolerance=_positive_int(env, "PERSONA_SIGNATURE_TOLERANCE", DEFAULT_SIGNATURE_TOLERANCE),
        max_webhook_bytes=_positive_int(env, "MAX_WEBHOOK_BYTES", DEFAULT_MAX_WEBHOOK_BYTES),
        persona_api_key=_optional(env, "PERSONA_API_KEY"),
        persona_api_url=_url(env, "PERSONA_API_URL", ("http", "https"), DEFAULT_PERSONA_API_URL),
        verisoul_api_url=_url(env, "VERISOUL_API_URL", ("http", "https")),
        verisoul_api_key=_optional(env, "VERISOUL_API_KEY"),
        verisoul_api_flavor=_flavor(env),
        verisoul_rate_limit=_positive_int(env, "VERISOUL_RATE_LIMIT", DEFAULT_VERISOUL_RATE_LIMIT),
        admin_api_token=_optional(env, "ADMIN_API_TOKEN"),
        host_api_token=_optional(env, "HOST_API_TOKEN"),
        host_webhook_url=host_webhook_url,
        host_webhook_secret=host_webhook_secret,
        host_webhook_retries=_retries(env),
        worker_metrics_port=_port(env, "WORKER_METRICS_PORT"),
        sentry_dsn=_url(env, "SENTRY_DSN", ("http", "https")),
        sentry_environment=_optional(env, "SENTRY_ENVIRONMENT") or DEFAULT_SENTRY_ENVIRONMENT,
        inquiry_expiry_hours=_positive_int(env, "PERSONA_INQUIRY_EXPIRY_HOURS", DEFAULT_INQUIRY_EXPIRY_HOURS),
        gate_resume_expired_hours=_positive_int(env, "GATE_RESUME_EXPIRED_HOURS", DEFAULT_GATE_RESUME_EXPIRED_HOURS),
        reconcile_grace_minutes=_positive_int(env, "RECONCILE_GRACE_MINUTES", DEFAULT_RECONCILE_GRACE_MINUTES),
        retry_after_block=_flag(env, "RETRY_AFTER_BLOCK", RETRY_AFTER_BLOCK),
        event_retention_days=_optional_positive_int(env, "EVENT_RETENTION_DAYS"),
    )


def share_metrics_dir(env=os.environ) -> str:
    """PROMETHEUS_MULTIPROC_DIR (default `var/metrics`), created; returns it.

    Every process on the host, gunicorn's workers and the rq workers alike, writes its metrics to its
    own files in this directory, and `/metrics` on any web worker sums them all, so a scrape counts
    every process whichever worker answers it. prometheus_client picks multiprocess mode when it is
    first imported, so this must run before anything imports it (gunicorn.conf.py, workers/rq_settings.py);
    this module never imports prometheus_client for that reason.
    """
    path = env.setdefault("PROMETHEUS_MULTIPROC_DIR", "var/metrics")
    os.makedirs(path, exist_ok=True)
    return path


def load_config_or_exit(verifies_webhooks: bool = True) -> Config:
    """The process configuration; on a bad setting, one line on stderr and exit status 2."""
    try:
        return load_config(verifies_webhooks=verifies_webhooks)
    except ConfigError as error:
        print(f"persona-events: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
