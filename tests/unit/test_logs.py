"""runtime.logs: the JSON formatter's allowlist, exceptions and RQ's records; configure() takes RQ's loggers."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest
from rq.logutils import blue, setup_loghandlers

from runtime import logs
from runtime.logs import JsonFormatter, configure


def _record(name: str = "app.test", msg: str = "hello", args: tuple = (), exc_info=None, **extra) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, msg, args, exc_info, extra=extra or None)


def _format(record: logging.LogRecord) -> dict:
    line = JsonFormatter().format(record)
    assert "\n" not in line  # one line per record, whatever the message holds
    return json.loads(line)


def test_a_line_is_json_with_the_basic_fields():
    entry = _format(_record(msg="webhook %s", args=("ok",)))
    assert entry["message"] == "webhook ok"
    assert (entry["level"], entry["logger"]) == ("info", "app.test")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["at"])  # the API's form (domain/times.py)


def test_only_allowlisted_extra_fields_are_written():
    record = _record(
        event_id="evt_1",
        outcome="queued",
        duration_ms=1.5,
        body='{"name-first": "Jane"}',
        headers={"Persona-Signature": "t=1,v1=abc"},
        arguments=({"name_first": "Jane"},),
    )
    entry = _format(record)
    assert (entry["event_id"], entry["outcome"], entry["duration_ms"]) == ("evt_1", "queued", 1.5)
    assert not {"body", "headers", "arguments"} & set(entry)
    assert "Jane" not in json.dumps(entry) and "abc" not in json.dumps(entry)


def test_an_exception_gives_its_class_only():
    try:
        raise ValueError("Invalid isoformat string: '1977-07-17 Jane Doe'")
    except ValueError:
        entry = _format(_record(exc_info=sys.exc_info()))
    assert entry["exception"] == "ValueError"
    assert "Jane" not in json.dumps(entry) and "Traceback" not in json.dumps(entry)


def test_a_multiline_message_stays_one_json_line():
    traceback_text = "Traceback (most recent call last):\n  File \"x.py\"\nKeyError: 'created_at'"
    entry = _format(
        _record("rq.worker", "job %s: exception raised\n%s", ("e_evt_1", traceback_text), job_id="e_evt_1", queue="q")
    )
    assert entry["message"].endswith("KeyError: 'created_at'")
    assert (entry["job_id"], entry["queue"]) == ("e_evt_1", "q")


@pytest.mark.parametrize(
    "msg, args, job_id",
    [
        (
            "Worker %s: %s: %s (%s)",
            ("w1", "persona-events", "process_event evt_1 inquiry.approved", "e_evt_1"),
            "e_evt_1",
        ),
        ("Worker %s: %s: %s (%s)", ("w1", "persona-events", blue("Job OK"), blue("e_evt_2")), "e_evt_2"),
        ("Worker %s: job %s result is kept for %s seconds", ("w1", "h-" + "ab" * 32, 86400), "h-" + "ab" * 32),
        ("Worker %s: %s: %s (%s)", ("w1", "persona-events", "Job OK", "sweep-verisoul-1"), None),
    ],
)
def test_rq_lines_carry_an_event_jobs_id(msg, args, job_id):
    entry = _format(_record("rq.worker", msg, args))
    assert entry.get("job_id") == job_id
    assert "\x1b" not in entry["message"]


def test_colour_codes_are_stripped():
    coloured = "\x1b[34mJob OK\x1b[39;49;00m"
    assert _format(_record("rq.worker", "Worker %s: %s", ("w1", coloured)))["message"] == "Worker w1: Job OK"


def test_job_ids_are_taken_from_rq_records_only():
    assert "job_id" not in _format(_record("app.webhooks", "seen %s", ("e_evt_1",)))


@pytest.fixture
def restore_loggers():
    """configure() and RQ change process-wide loggers: put them back as they were."""
    names = (*logs.LOGGERS, "rq.worker", "rq.job")
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in map(logging.getLogger, names)]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_configure_takes_rq_and_is_idempotent(restore_loggers):
    configure()
    configure()
    for name in ("app", "workers", "rq"):
        logger = logging.getLogger(name)
        assert len(logger.handlers) == 1 and isinstance(logger.handlers[0].formatter, JsonFormatter), name
        assert (logger.level, logger.propagate) == (logging.INFO, False), name


def test_rq_adds_no_plain_text_handler_after_configure(restore_loggers, monkeypatch, capsys):
    """What `rq worker` does after importing workers/rq_settings.py (which calls configure()): RQ's
    setup_loghandlers adds its own handlers only where it finds no handler up the tree. The root's
    handlers (pytest's) are taken away so that only ours can stop it."""
    monkeypatch.setattr(logging.root, "handlers", [])
    for name in ("rq.worker", "rq.job"):
        logging.getLogger(name).handlers[:] = []
    configure()
    setup_loghandlers(None, name="rq.worker")
    setup_loghandlers("INFO", name="rq.job")
    assert logging.getLogger("rq.worker").handlers == [] and logging.getLogger("rq.job").handlers == []

    logging.getLogger("rq.worker").info("Worker %s: %s: %s (%s)", "w1", "persona-events", "Job OK", "e_evt_1")
    captured = capsys.readouterr()
    assert captured.out == ""
    [entry] = [json.loads(line) for line in captured.err.splitlines()]
    assert (entry["logger"], entry["job_id"], entry["message"]) == (
        "rq.worker",
        "e_evt_1",
        "Worker w1: persona-events: Job OK (e_evt_1)",
    )


def test_without_configure_rq_would_add_its_own_handler(restore_loggers, monkeypatch):
    """The control for the test above: the same call on an unconfigured tree does add RQ's handlers."""
    monkeypatch.setattr(logging.root, "handlers", [])
    for name in ("rq", "rq.worker"):
        logging.getLogger(name).handlers[:] = []
    setup_loghandlers(None, name="rq.worker")
    assert len(logging.getLogger("rq.worker").handlers) == 2


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "203.0.113.7", "::1", "2001:db8::1", "::ffff:10.0.0.1", "[2001:db8::1]", "unix"]
)
def test_gunicorn_never_writes_the_clients_address(address):
    """Found by a trial: gunicorn's "Invalid request from ip=127.0.0.1: ..." reached the logs."""
    record = logging.LogRecord(
        "gunicorn.error", logging.WARNING, __file__, 1, "Invalid request from ip=%s: %s", (address, "Bad Request"), None
    )
    line = json.loads(JsonFormatter().format(record))
    assert address.strip("[]") not in line["message"] and "Bad Request" in line["message"]
