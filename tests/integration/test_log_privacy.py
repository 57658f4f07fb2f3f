"""No personal data reaches the logs: every fixture, in every key casing, through the real web app on
real Redis and an RQ worker on SQLite and PostgreSQL, with every logger at DEBUG; plus the Procfile's
worker command writes nothing but JSON lines."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import traceback
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rq import Queue, SimpleWorker

from app import create_app
from domain.events import body_sha256, minimise, normalise_keys
from domain.schemas import load_envelope
from domain.times import iso_millis
from runtime.logs import JsonFormatter
from scripts.devstack import procfile_command
from scripts.fake_verisoul import create_fake_app as create_fake_verisoul
from store.queue import EventQueue, job_id_for
from tests.payloads import (
    CASINGS,
    FIXTURE_NAMES,
    SECRET,
    WEBHOOK,
    encode,
    headers,
    load_fixture,
    personal_values,
    recase,
)
from tests.servers import serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = "sandbox_inquiry_approved.json"
CAPTURED_LOGGERS = ("", "app", "workers", "rq", "werkzeug", "sqlalchemy")
BROKEN_EVENT_ID = "evt_broken_for_logs"

# Personal values shorter than this are also ordinary words of log text (`CA`, `US`, `dl`, `front`
# in RQ's `at_front=False`): they count as a leak only as a whole token. Longer ones count anywhere.
SHORT = 6


class Capture(logging.Handler):
    """Every record once (a record reaches a logger's handler and, propagating, the root's): its
    JSON line, its message, and its exception text, if any."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.records: dict[int, logging.LogRecord] = {}  # holding the records keeps their ids unique
        self.lines: list[str] = []
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) in self.records:
            return
        self.records[id(record)] = record
        self.lines.append(self.format(record))
        self.texts.append(record.getMessage())
        if record.exc_info:
            self.texts.append("".join(traceback.format_exception(*record.exc_info)))
        if record.exc_text:
            self.texts.append(record.exc_text)
        if record.stack_info:
            self.texts.append(record.stack_info)

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def capture():
    """`capture()` puts a Capture on every logger of interest, at DEBUG. Call it after create_app(),
    whose runtime.logs.configure() replaces the handlers of `app`, `workers` and `rq` and resets their
    levels. Handlers and levels are restored at the end."""
    handler = Capture()
    saved: list[tuple[logging.Logger, int]] = []

    def start() -> Capture:
        for name in (*CAPTURED_LOGGERS, "rq.worker", "rq.job"):  # RQ's bootstrap sets these two's levels
            logger = logging.getLogger(name)
            saved.append((logger, logger.level))
            if name in CAPTURED_LOGGERS:
                logger.addHandler(handler)
                logger.setLevel(logging.DEBUG)
        return handler

    yield start
    for logger, level in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def fresh_jobs(worker_env, monkeypatch):
    """workers.jobs builds its engine, Redis connection and syncer once per process: rebuild them from
    this test's environment (and so with SQLAlchemy's loggers at the level of the moment), with the fake
    Verisoul configured, so that syncs are queued and run (and their lines checked) too."""
    from workers import jobs

    def clear() -> None:
        for value in vars(jobs).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()

    with serve(create_fake_verisoul()) as verisoul_url:
        monkeypatch.setenv("VERISOUL_API_URL", verisoul_url)
        monkeypatch.setenv("VERISOUL_API_KEY", "fake-verisoul-key")
        clear()
        yield worker_env
        clear()


def _forbidden(config) -> dict[str, set[str]]:
    """Per fixture, its personal values; the shared secret too, for good measure. Left out: values
    without a letter or digit (the overview fixture's fields are the placeholder `...`, which SQLAlchemy
    also writes when it shortens a parameter list), and values that are part of our own Redis or
    database URL (the docs' `ip-address` is `127.0.0.1`, where the test services listen)."""
    ours = f"{config.redis_url} {config.database_url}"

    def telling(value: str) -> bool:
        return re.search(r"[^\W_]", value) is not None and value not in ours

    found = {name: set(filter(telling, personal_values(load_fixture(name)))) for name in FIXTURE_NAMES}
    found["secret"] = {SECRET}
    return found


# The time each line was written (the formatter's `at`): a short number of the fixtures (the latitude
# `37.751`) can be read off its seconds and milliseconds by chance, which is no leak.
_LINE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}")


def _leaks(texts: list[str], forbidden: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    texts = [_LINE_TIME.sub("<time>", text) for text in texts]
    leaks = []
    for source, values in forbidden.items():
        for value in values:
            if len(value) < SHORT:
                pattern = re.compile(r"(?<![\w.])" + re.escape(value) + r"(?![\w.])")
                hits = [text for text in texts if pattern.search(text)]
            else:
                hits = [text for text in texts if value in text]
            leaks += [(source, value, hit[:300]) for hit in hits[:1]]
    return leaks


def _case_document(name: str, casing: str) -> dict:
    """The fixture in `casing`, its event id made distinct per casing so each casing is queued and
    processed (values are untouched by re-casing, so the personal values are the fixture's)."""
    document = recase(load_fixture(name, reference_id=f"user_{casing}"), casing)
    document["data"]["id"] = f"{document['data']['id']}_{casing}"
    return document


def _rejected_bodies(sandbox: dict) -> list[tuple[bytes, dict, int]]:
    """Requests refused or ignored, each carrying the sandbox capture's personal data, and one accepted
    with a name in Persona's attempts header (its event is queued and processed like the others)."""
    full = encode(sandbox)
    no_type = json.loads(full)
    no_type["data"]["type"] = "ALEXANDER J SAMPLE"
    bad_time = json.loads(full)
    bad_time["data"]["attributes"]["created-at"] = "1977-07-17 600 CALIFORNIA STREET"
    no_payload_id = json.loads(full)
    del no_payload_id["data"]["attributes"]["payload"]["data"]["id"]
    not_an_event = json.loads(full)["data"]["attributes"]["payload"]  # the inquiry without the envelope
    other_name = json.loads(full)
    other_name["data"]["attributes"]["name"] = "account.created"
    truncated = full[: full.index(b"1977-07-17") + 20]
    return [
        (full, headers(full, secret="wbhsec_wrong"), 401),
        (full, {"Content-Type": "application/json"}, 401),
        (full, {**headers(full), "Persona-Webhook-Attempts-Made": "ALEXANDER J SAMPLE"}, 200),
        (full, {**headers(full), "Content-Type": "text/plain"}, 415),
        (truncated, headers(truncated), 400),
        *[(body, headers(body), 400) for body in map(encode, (no_type, bad_time, no_payload_id, not_an_event))],
        (encode(other_name), headers(encode(other_name)), 200),
    ]


def _broken_job_event() -> dict[str, object]:
    """The sandbox capture minimised as the web process queues it, without `created_at`: the job
    fails (KeyError) and RQ logs its traceback."""
    body = encode(load_fixture(SANDBOX))
    event: dict[str, object] = dict(minimise(load_envelope(normalise_keys(json.loads(body))), body_sha256(body)))
    event["event_id"] = BROKEN_EVENT_ID
    event["received_at"] = iso_millis(datetime.now(UTC))
    del event["created_at"]
    return event


def test_personal_values_are_a_real_list():
    """The check below means something only if the list holds the obvious personal data."""
    sandbox = personal_values(load_fixture(SANDBOX))
    assert {"1977-07-17", "ALEXANDER J", "SAMPLE", "600 CALIFORNIA STREET", "I1234562", "87.157.115.169"} <= sandbox
    assert len(sandbox) > 30
    assert {"Jane", "Doe", "1995-09-08", "jane@doe.com", "123 Main St"} <= personal_values(
        load_fixture("docs_inquiry_completed.json")
    )
    assert {"JANE", "DOE", "1990-01-01", "Y123ABC"} <= personal_values(load_fixture("docs_verification_passed.json"))
    # The same values in every key casing.
    for name in FIXTURE_NAMES:
        assert all(
            personal_values(recase(load_fixture(name), casing)) == personal_values(load_fixture(name))
            for casing in CASINGS
        )


def test_no_personal_value_reaches_any_log(real_config, real_redis, fresh_jobs, capture):
    client = create_app(real_config, redis=real_redis).test_client()
    logs = capture()

    queued: dict[str, str] = {}
    for name in FIXTURE_NAMES:
        for casing in CASINGS:
            body = encode(_case_document(name, casing))
            for expected in ("queued", "duplicate"):
                answer = client.post(
                    WEBHOOK, data=body, headers=headers(body, **{"Persona-Webhook-Attempts-Made": "1"})
                )
                assert (answer.status_code, answer.json["status"]) == (200, expected), (name, casing)
            queued[answer.json["event_id"]] = name
    assert len(queued) == len(FIXTURE_NAMES) * len(CASINGS)

    for body, sent, status in _rejected_bodies(load_fixture(SANDBOX)):
        assert client.post(WEBHOOK, data=body, headers=sent).status_code == status

    assert EventQueue(real_redis, real_config).enqueue_once(_broken_job_event())
    worker = SimpleWorker([Queue(name, connection=real_redis) for name in real_config.queues], connection=real_redis)
    worker.work(burst=True, logging_level="DEBUG")

    entries = logs.entries()  # every line is JSON
    assert all(set(entry) >= {"at", "level", "logger", "message"} for entry in entries)
    leaks = _leaks(logs.lines + logs.texts, _forbidden(real_config))
    assert leaks == []

    # Each logger family said something, at DEBUG too, so the check above covered it.
    loggers = {entry["logger"] for entry in entries}
    assert {"app.webhooks", "workers.jobs", "rq.worker", "rq.queue"} <= loggers
    assert any(name.startswith("sqlalchemy.") for name in loggers)
    assert "debug" in {entry["level"] for entry in entries if entry["logger"].startswith("rq.")}

    # The web process's line and the worker's line of one event share its event_id; RQ's lines its job id.
    webhook = {e["event_id"]: e for e in entries if e["logger"] == "app.webhooks" and e.get("outcome") == "queued"}
    processed = {
        e["event_id"]: e for e in entries if e["logger"] == "workers.jobs" and e["message"] == "event processed"
    }
    assert set(webhook) == set(processed) >= set(queued)  # plus the sandbox with an odd attempts header
    for event_id in webhook:
        assert webhook[event_id]["event_name"] == processed[event_id]["event_name"]
        rq_lines = [e for e in entries if e["logger"].startswith("rq.") and e.get("job_id") == job_id_for(event_id)]
        assert any("Job OK" in e["message"] for e in rq_lines), event_id

    # The failed job: its traceback was captured (and checked above), with the exception's class and message.
    [failure] = [e for e in entries if e["logger"] == "rq.worker" and e["level"] == "error"]
    assert failure["job_id"] == job_id_for(BROKEN_EVENT_ID) and failure["queue"] == real_config.events_queue
    assert (
        "Traceback" in failure["message"]
        and "PermanentJobError: event evt_broken_for_logs: KeyError: 'created_at'" in failure["message"]
    )
    assert "arguments" not in failure  # RQ's extra with the job's arguments is not allowlisted

    # The rejected requests were logged, by outcome only.
    outcomes = [e.get("outcome") for e in entries if e["logger"] == "app.webhooks"]
    for outcome in ("invalid_signature", "unsupported_media_type", "invalid_json", "invalid_envelope", "ignored"):
        assert outcome in outcomes


def test_procfile_worker_writes_only_json(real_config, real_redis, real_client, worker_env, tmp_path):
    """`rq worker --config workers.rq_settings` (the Procfile's command, in burst mode): RQ's own lines
    are our JSON too, with the job id; no plain-text handler of RQ's writes anything."""
    body = encode(load_fixture(SANDBOX, "user_procfile"))
    event_id = real_client.post(WEBHOOK, data=body, headers=headers(body)).json["event_id"]
    assert EventQueue(real_redis, real_config).enqueue_once(_broken_job_event())

    env = {**os.environ, **worker_env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    result = subprocess.run(
        [*procfile_command("worker"), "--burst"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # fails on any plain-text line
    assert _leaks(lines, _forbidden(real_config)) == []

    jobs_lines = [e for e in entries if e["logger"] == "workers.jobs" and e["message"] == "event processed"]
    assert [e["event_id"] for e in jobs_lines] == [event_id]
    assert any(
        e["logger"] == "rq.worker" and e.get("job_id") == job_id_for(event_id) and "Job OK" in e["message"]
        for e in entries
    )
    [failure] = [e for e in entries if e["logger"] == "rq.worker" and e["level"] == "error"]
    assert failure["job_id"] == job_id_for(BROKEN_EVENT_ID)
    assert "KeyError: 'created_at'" in failure["message"]
