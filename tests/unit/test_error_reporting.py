"""Error reporting with Sentry (SENTRY_DSN): off by default; when on, the web's unexpected errors and a job's
final failure reach a (fake) Sentry with their event id named in the answer, the job and the log, and no
personal data, body or client address goes with them."""

from __future__ import annotations

import dataclasses
import gzip
import json
import threading

import fakeredis
import pytest
import sentry_sdk
from flask import Flask, request
from rq import Queue
from rq.job import Job

from app import create_app
from runtime.config import ConfigError, load_config
from runtime.errors import init_error_reporting
from tests.payloads import SECRET, encode, headers, load_fixture, personal_values
from tests.servers import serve
from workers.worker import Worker

CLIENT_ADDRESS = "203.0.113.9"  # TEST-NET-3: appears nowhere unless the client's address is sent


class FakeSentry:
    """Sentry's envelope endpoint: keeps every envelope it is sent, decompressed."""

    def __init__(self):
        self.envelopes: list[bytes] = []
        self.lock = threading.Lock()
        self.app = Flask(__name__)
        self.app.add_url_rule("/api/<project>/envelope/", "envelope", self.receive, methods=["POST"])

    def receive(self, project: str):
        body = request.get_data()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with self.lock:
            self.envelopes.append(body)
        return {"id": "ok"}

    def event_ids(self) -> list[str]:
        """The id of each error event received (an envelope's first line is its header)."""
        ids = []
        for envelope in self.envelopes:
            header = json.loads(envelope.split(b"\n", 1)[0])
            if b'"type":"event"' in envelope.replace(b" ", b""):
                ids.append(header["event_id"])
        return ids


@pytest.fixture
def sentry():
    fake = FakeSentry()
    with serve(fake.app) as url:
        fake.dsn = url.replace("http://", "http://publickey@") + "/1"
        yield fake
    # Reporting off again for the other tests: with no client, the integrations' patches do nothing
    # (a client without a DSN would still add trace headers to the jobs RQ enqueues).
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def with_sentry(config, dsn: str):
    return dataclasses.replace(config, sentry_dsn=dsn, sentry_environment="test")


def test_reporting_is_off_without_a_dsn(config, client, redis, monkeypatch):
    assert init_error_reporting(config, "web") is False
    monkeypatch.setattr(client.application.extensions["event_queue"], "enqueue_once", _broken)
    body = encode(load_fixture("docs_inquiry_completed.json"))
    response = client.post("/webhooks/persona", data=body, headers=headers(body))
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal_error", "detail": "unexpected error; see the server log"}


def test_sentry_dsn_must_be_a_url():
    base = {"PERSONA_WEBHOOK_SECRETS": SECRET, "REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert load_config(base, read_dotenv=False).sentry_dsn is None
    dsn = "https://key@o1.ingest.sentry.io/2"
    loaded = load_config({**base, "SENTRY_DSN": dsn, "SENTRY_ENVIRONMENT": "staging"}, read_dotenv=False)
    assert (loaded.sentry_dsn, loaded.sentry_environment) == (dsn, "staging")
    assert dsn not in repr(loaded)  # the DSN's key is a credential: kept out of repr like the secrets
    with pytest.raises(ConfigError, match="SENTRY_DSN must be a URL"):
        load_config({**base, "SENTRY_DSN": "key@o1.ingest.sentry.io/2"}, read_dotenv=False)


def _broken(event):
    raise RuntimeError("a bug in the enqueue")


def test_an_unexpected_error_is_reported_without_personal_data_and_answered_with_its_id(
    config, redis, sentry, monkeypatch
):
    app = create_app(with_sentry(config, sentry.dsn), redis=redis)
    monkeypatch.setattr(app.extensions["event_queue"], "enqueue_once", _broken)
    document = load_fixture("sandbox_inquiry_approved.json")
    body = encode(document)
    response = app.test_client().post(
        "/webhooks/persona", data=body, headers=headers(body), environ_base={"REMOTE_ADDR": CLIENT_ADDRESS}
    )
    sentry_sdk.flush(timeout=5)

    assert response.status_code == 500
    answer = response.get_json()
    assert answer["error"] == "internal_error"
    assert sentry.event_ids() == [answer["sentry_event_id"]]
    sent = b"".join(sentry.envelopes).decode()
    assert "a bug in the enqueue" in sent and "RuntimeError" in sent  # the report is the error's
    # values of four characters or more: a two-letter ID class (`dl`) is found inside any word
    personal = {value for value in personal_values(document) if len(value) >= 4}
    leaked = [value for value in personal | {CLIENT_ADDRESS, SECRET} if value in sent]
    assert leaked == []
    assert body.decode()[:200] not in sent


def fail_for_good():
    raise ValueError("a job that cannot succeed")


def test_a_jobs_final_failure_is_reported_and_the_job_names_the_report(config, sentry):
    assert init_error_reporting(with_sentry(config, sentry.dsn), "worker") is True
    connection = fakeredis.FakeRedis()
    queue = Queue("persona-sync", connection=connection)
    job = queue.enqueue(fail_for_good)
    Worker([queue], connection=connection).work(burst=True)
    sentry_sdk.flush(timeout=5)

    job = Job.fetch(job.id, connection=connection)
    assert job.is_failed
    assert sentry.event_ids() == [job.meta["sentry_event_id"]]
