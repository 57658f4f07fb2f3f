"""Configuration (runtime/config.py): required settings, validation, defaults, and the start-up failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.config import DEFAULT_DATABASE_URL, ENV_FILE, Config, ConfigError, load_config, shown_url

BASE = {"PERSONA_WEBHOOK_SECRETS": "wbhsec_new", "REDIS_URL": "redis://localhost:6379/0"}
ROOT = Path(__file__).resolve().parents[2]


def config_error(**env) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config({**BASE, **env})
    message = str(raised.value)
    assert message and "\n" not in message
    return message


def without(name: str) -> dict:
    return {k: v for k, v in BASE.items() if k != name}


def test_defaults():
    config = load_config(BASE)
    assert config.webhook_secrets == ("wbhsec_new",)
    assert config.redis_url == "redis://localhost:6379/0"
    assert config.database_url == DEFAULT_DATABASE_URL == "sqlite:///var/persona-events.db"
    assert config.signature_tolerance == 300
    assert config.max_webhook_bytes == 1024 * 1024
    assert config.dedupe_ttl >= 7 * 24 * 3600
    assert config.persona_api_url == "https://api.withpersona.com"
    assert config.verisoul_api_flavor == "account"
    assert (config.persona_api_key, config.verisoul_api_url, config.verisoul_api_key, config.admin_api_token) == (
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    "value, expected",
    [("", True), ("true", True), (" TRUE ", True), ("1", True), ("yes", True), ("on", True)]
    + [("false", False), ("False", False), ("0", False), ("no", False), ("off", False)],
)
def test_retry_after_block_is_a_flag_on_by_default(value, expected):
    config = load_config({**BASE, "RETRY_AFTER_BLOCK": value})
    assert config.retry_after_block is expected and config.policy.retry_after_block is expected


HOST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_host_webhook_is_off_by_default_and_on_with_both_settings():
    assert load_config(BASE).record_settings.notify is False
    config = load_config({**BASE, "HOST_WEBHOOK_URL": "https://host.example/hooks", "HOST_WEBHOOK_SECRET": HOST_SECRET})
    assert config.record_settings.notify is True and config.host_webhook_retries == (
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
    )
    assert HOST_SECRET not in repr(config)
    assert config.queues[-1] == "persona-notify"


@pytest.mark.parametrize(
    "env, named",
    [
        ({"HOST_WEBHOOK_URL": "https://host.example/hooks"}, "HOST_WEBHOOK_SECRET"),
        ({"HOST_WEBHOOK_SECRET": HOST_SECRET}, "HOST_WEBHOOK_URL"),
        ({"HOST_WEBHOOK_URL": "ftp://host.example", "HOST_WEBHOOK_SECRET": HOST_SECRET}, "HOST_WEBHOOK_URL"),
        ({"HOST_WEBHOOK_URL": "https://h.example", "HOST_WEBHOOK_SECRET": "plain-secret"}, "HOST_WEBHOOK_SECRET"),
        ({"HOST_WEBHOOK_URL": "https://h.example", "HOST_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "HOST_WEBHOOK_SECRET"),
        ({"HOST_WEBHOOK_URL": "https://h.example", "HOST_WEBHOOK_SECRET": "whsec_!!!"}, "HOST_WEBHOOK_SECRET"),
        ({"HOST_WEBHOOK_RETRIES": "5,0"}, "HOST_WEBHOOK_RETRIES"),
        ({"HOST_WEBHOOK_RETRIES": "5,,6"}, "HOST_WEBHOOK_RETRIES"),
    ],
)
def test_a_bad_host_webhook_setting_is_named_without_the_secret(env, named):
    message = config_error(**env)
    assert message.startswith(named) and "plain-secret" not in message


@pytest.mark.parametrize("value", ["maybe", "2", "tru", "n"])
def test_retry_after_block_refuses_anything_but_a_flag_naming_it(value):
    message = config_error(RETRY_AFTER_BLOCK=value)
    assert message.startswith("RETRY_AFTER_BLOCK must be true or false") and repr(value) in message


@pytest.mark.parametrize("name", ["PERSONA_WEBHOOK_SECRETS", "REDIS_URL"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_required_setting_missing_is_named(name, value):
    env = without(name) if value is None else {**BASE, name: value}
    with pytest.raises(ConfigError) as raised:
        load_config(env)
    assert name in str(raised.value) and "\n" not in str(raised.value)


def test_secrets_are_named_first_when_everything_is_missing():
    with pytest.raises(ConfigError, match="PERSONA_WEBHOOK_SECRETS"):
        load_config({})


def test_secrets_are_comma_separated_and_trimmed():
    assert load_config({**BASE, "PERSONA_WEBHOOK_SECRETS": " wbhsec_new , wbhsec_old,, "}).webhook_secrets == (
        "wbhsec_new",
        "wbhsec_old",
    )


@pytest.mark.parametrize("value", [",", " , ,"])
def test_secrets_list_without_a_secret(value):
    assert "PERSONA_WEBHOOK_SECRETS" in config_error(PERSONA_WEBHOOK_SECRETS=value)


@pytest.mark.parametrize("name", ["PERSONA_SIGNATURE_TOLERANCE", "MAX_WEBHOOK_BYTES"])
@pytest.mark.parametrize("value", ["abc", "1.5", "0", "-1", "300s", "1e6"])
def test_malformed_integer_is_named(name, value):
    message = config_error(**{name: value})
    assert name in message and repr(value) in message


@pytest.mark.parametrize(
    "name, value, attribute, expected",
    [
        ("PERSONA_SIGNATURE_TOLERANCE", " 60 ", "signature_tolerance", 60),
        ("MAX_WEBHOOK_BYTES", "2048", "max_webhook_bytes", 2048),
        ("MAX_WEBHOOK_BYTES", "", "max_webhook_bytes", 1024 * 1024),
    ],
)
def test_integers(name, value, attribute, expected):
    assert getattr(load_config({**BASE, name: value}), attribute) == expected


@pytest.mark.parametrize(
    "name, value",
    [
        ("REDIS_URL", "http://localhost:6379"),
        ("REDIS_URL", "localhost:6379"),
        ("REDIS_URL", "redis:localhost"),
        ("REDIS_URL", "memcached://localhost"),
        ("DATABASE_URL", "mysql://u@h/db"),
        ("DATABASE_URL", "var/persona-events.db"),
        ("PERSONA_API_URL", "ftp://api.withpersona.com"),
        ("PERSONA_API_URL", "api.withpersona.com"),
        ("VERISOUL_API_URL", "redis://localhost"),
    ],
)
def test_bad_url_scheme_is_named(name, value):
    assert name in config_error(**{name: value})


@pytest.mark.parametrize(
    "name, value, attribute",
    [
        ("REDIS_URL", "rediss://:pw@redis.example:6380/1", "redis_url"),
        ("REDIS_URL", "unix:///run/redis.sock", "redis_url"),
        ("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test", "database_url"),
        ("DATABASE_URL", "postgres://u:p@db/prod", "database_url"),
        ("DATABASE_URL", "postgresql+psycopg://u@db/prod", "database_url"),
        ("DATABASE_URL", "sqlite:////abs/path.db", "database_url"),
        ("PERSONA_API_URL", "http://127.0.0.1:9000", "persona_api_url"),
        ("VERISOUL_API_URL", "https://api.sandbox.verisoul.ai", "verisoul_api_url"),
    ],
)
def test_good_urls_are_kept(name, value, attribute):
    assert getattr(load_config({**BASE, name: value}), attribute) == value


@pytest.mark.parametrize("flavor", ["account", "lists"])
def test_verisoul_flavor(flavor):
    assert load_config({**BASE, "VERISOUL_API_FLAVOR": flavor}).verisoul_api_flavor == flavor


@pytest.mark.parametrize("flavor", ["ACCOUNT", "list", "both"])
def test_bad_verisoul_flavor_is_named(flavor):
    assert "VERISOUL_API_FLAVOR" in config_error(VERISOUL_API_FLAVOR=flavor)


def test_optional_secrets_are_read_and_kept_out_of_repr():
    env = {**BASE, "PERSONA_API_KEY": "persona_key_1", "VERISOUL_API_KEY": "verisoul_key_1", "ADMIN_API_TOKEN": "tok_1"}
    config = load_config(env)
    assert (config.persona_api_key, config.verisoul_api_key, config.admin_api_token) == (
        "persona_key_1",
        "verisoul_key_1",
        "tok_1",
    )
    for secret in ("wbhsec_new", "persona_key_1", "verisoul_key_1", "tok_1"):
        assert secret not in repr(config)


def test_an_explicit_mapping_ignores_the_process_environment(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "http://not-used")
    monkeypatch.setenv("MAX_WEBHOOK_BYTES", "not-used")
    assert load_config(BASE).redis_url == BASE["REDIS_URL"]


def test_process_environment_is_read_when_no_mapping_is_given(monkeypatch):
    for name, value in {**BASE, "MAX_WEBHOOK_BYTES": "4096"}.items():
        monkeypatch.setenv(name, value)
    assert load_config(read_dotenv=False).max_webhook_bytes == 4096


# --- the process start ----------------------------------------------------------------------------------


def start_app(cwd: Path, dotenv: str, **env: str) -> subprocess.CompletedProcess:
    """`create_app()` in a fresh interpreter with only PATH (and `env`) set, run from `cwd`.

    With `python -c` there is no `__main__.__file__`, so python-dotenv's find_dotenv searches from the
    working directory upwards. A `.env` is always written to `cwd`, so one further up (in /tmp, say)
    can never be the one found."""
    (cwd / ".env").write_text(dotenv)
    return subprocess.run(
        [sys.executable, "-c", "from app import create_app; create_app()"],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_exit(result: subprocess.CompletedProcess, name: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr
    assert result.stdout == ""


def test_app_is_importable_outside_the_repository(tmp_path):
    """Precondition for the tests below: they run from a directory outside the repository."""
    assert ROOT not in tmp_path.parents
    probe = subprocess.run(
        [sys.executable, "-c", "import app; print(app.__file__)"], cwd=tmp_path, capture_output=True, text=True
    )
    assert Path(probe.stdout.strip()).parent == ROOT / "app", probe.stderr


def test_start_with_empty_environment_exits_with_one_line(tmp_path):
    result = start_app(tmp_path, "# nothing set here\n")
    assert_one_line_exit(result, "PERSONA_WEBHOOK_SECRETS")


def test_start_reads_dotenv(tmp_path):
    result = start_app(tmp_path, "PERSONA_WEBHOOK_SECRETS=wbhsec_from_dotenv\n")
    assert_one_line_exit(result, "REDIS_URL")


def test_start_prefers_the_environment_to_dotenv(tmp_path):
    result = start_app(
        tmp_path,
        "PERSONA_WEBHOOK_SECRETS=wbhsec_x\nREDIS_URL=redis://localhost:6379/0\n",
        REDIS_URL="http://from-environment",
    )
    assert_one_line_exit(result, "REDIS_URL")


def test_start_with_a_malformed_setting_exits_with_one_line(tmp_path):
    secret = "wbhsec_never_printed"
    result = start_app(tmp_path, "", PERSONA_WEBHOOK_SECRETS=secret, REDIS_URL="redis://x", MAX_WEBHOOK_BYTES="1MB")
    assert_one_line_exit(result, "MAX_WEBHOOK_BYTES")
    assert secret not in result.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://app:s3cret@db:5432/events", "postgresql+psycopg://app:***@db:5432/events"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/1"),
        ("sqlite:///var/persona-events.db", "sqlite:///var/persona-events.db"),
    ],
)
def test_a_url_is_shown_without_its_password(url, shown):
    assert shown_url(url) == shown
    config = Config(webhook_secrets=("s",), redis_url=url, database_url=url)
    assert "s3cret" not in config.stores


def test_show_events_says_which_database_it_reads(tmp_path, monkeypatch, capsys):
    from scripts import show_events
    from store.db import migrate

    url = f"sqlite:///{tmp_path / 'shown.db'}"
    migrate(url)
    monkeypatch.setenv("DATABASE_URL", url)
    assert show_events.main([]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"events of database {url}"


def test_env_example_copied_as_is_keeps_the_service_private_and_shares_no_redis_database():
    """Issue 11: copied as is it pointed at Redis' shared db 0, held a placeholder secret that was taken
    without a word, and let gunicorn bind 0.0.0.0 with /metrics unauthenticated."""
    from dotenv import dotenv_values

    example = dotenv_values(ROOT / ".env.example")
    assert "REDIS_URL" not in example  # ./scripts/run then starts its own Redis
    assert "PERSONA_WEBHOOK_SECRETS" not in example  # ./scripts/run then uses its development secret
    assert example["HOST"] == "127.0.0.1"


def test_the_example_placeholder_secret_is_refused_naming_the_way_out():
    with pytest.raises(ConfigError, match="placeholder wbhsec_replace_me: set the secret from Persona's dashboard"):
        load_config(
            {"PERSONA_WEBHOOK_SECRETS": "wbhsec_new,wbhsec_replace_me", "REDIS_URL": "redis://x"}, read_dotenv=False
        )


def test_worker_metrics_port_is_a_tcp_port_or_unset():
    base = {"PERSONA_WEBHOOK_SECRETS": "s", "REDIS_URL": "redis://x"}
    assert load_config(base, read_dotenv=False).worker_metrics_port is None
    assert load_config({**base, "WORKER_METRICS_PORT": "9101"}, read_dotenv=False).worker_metrics_port == 9101
    for bad in ("0", "70000", "nine"):
        with pytest.raises(ConfigError, match="WORKER_METRICS_PORT must be a TCP port"):
            load_config({**base, "WORKER_METRICS_PORT": bad}, read_dotenv=False)


def test_every_missing_required_setting_is_named_at_once():
    """Issue 11: a deployment from `.env.example` found PERSONA_WEBHOOK_SECRETS, then REDIS_URL, one restart each."""
    with pytest.raises(ConfigError, match="^PERSONA_WEBHOOK_SECRETS and REDIS_URL are required but not set$"):
        load_config({}, read_dotenv=False)
    with pytest.raises(ConfigError, match="^REDIS_URL is required but not set$"):
        load_config({}, read_dotenv=False, verifies_webhooks=False)


def test_the_env_file_is_the_one_named_and_none_when_named_empty(tmp_path, monkeypatch):
    """Issue 11: the suite read the developer's `.env` (its REDIS_URL and placeholder secret) and failed."""
    (tmp_path / ".env").write_text("REDIS_URL=redis://from-dotenv:6379/0\n")
    (tmp_path / "other.env").write_text("REDIS_URL=redis://from-other:6379/0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)  # restored after the test, whatever the files set
    assert os.environ[ENV_FILE] == ""  # as tests/conftest.py sets it for the whole suite
    with pytest.raises(ConfigError, match="REDIS_URL is required"):
        load_config(verifies_webhooks=False)
    monkeypatch.setenv(ENV_FILE, str(tmp_path / "other.env"))
    assert load_config(verifies_webhooks=False).redis_url == "redis://from-other:6379/0"
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.delenv(ENV_FILE)
    assert load_config(verifies_webhooks=False).redis_url == "redis://from-dotenv:6379/0"
