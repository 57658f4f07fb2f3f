"""`GET /metrics` and the service's metrics, in single-process mode (no PROMETHEUS_MULTIPROC_DIR):
the Flask test client, fakeredis, and the default registry read before and after."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import fakeredis
import pytest
import requests
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue
from rq.registry import FailedJobRegistry

from app import create_app
from clients.verisoul import ATTEMPTS, VerisoulError, VerisoulUnavailable
from runtime import metrics
from runtime.config import share_metrics_dir
from runtime.metrics import count_transition, timed_job
from tests.payloads import SECRET, WEBHOOK, encode, envelope, headers

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    metrics.MULTIPROC_DIR is not None, reason="unit tests read the default registry: unset PROMETHEUS_MULTIPROC_DIR"
)


def value(name: str, **labels) -> float:
    """The sample's current value in the default registry, 0 when it has none yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client) -> dict[tuple[str, tuple], float]:
    """GET /metrics, parsed: {(sample name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def post_event(client, event_id: str, secret: str = SECRET):
    body = encode(envelope(event_id=event_id))
    return client.post(WEBHOOK, data=body, headers=headers(body, secret))


def explode():
    raise RuntimeError("boom")


def test_metrics_answers_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    text = response.get_data(as_text=True)
    assert "# TYPE persona_webhooks_total counter" in text
    assert "# TYPE persona_webhook_duration_seconds histogram" in text
    assert "persona_queue_up 1.0" in text


def test_a_queued_event_counts_once(client):
    before = value("persona_webhooks_total", outcome="queued")
    duplicates = value("persona_webhooks_total", outcome="duplicate")
    observed = value("persona_webhook_duration_seconds_count")

    assert post_event(client, "evt_metrics_queued").json["status"] == "queued"

    assert value("persona_webhooks_total", outcome="queued") == before + 1
    assert value("persona_webhooks_total", outcome="duplicate") == duplicates
    assert value("persona_webhook_duration_seconds_count") == observed + 1
    assert post_event(client, "evt_metrics_queued").json["status"] == "duplicate"
    assert value("persona_webhooks_total", outcome="duplicate") == duplicates + 1
    assert value("persona_webhooks_total", outcome="queued") == before + 1
    assert scrape(client)[("persona_webhooks_total", (("outcome", "queued"),))] == before + 1


def test_a_bad_signature_counts_its_outcome_and_reason(client):
    rejected = value("persona_webhooks_total", outcome="invalid_signature")
    mismatches = value("persona_webhook_signature_failures_total", reason="mismatch")
    missing = value("persona_webhook_signature_failures_total", reason="missing")
    queued = value("persona_webhooks_total", outcome="queued")

    assert post_event(client, "evt_metrics_forged", secret="wbhsec_wrong").status_code == 401
    assert client.post(WEBHOOK, data=b"{}", headers={"Content-Type": "application/json"}).status_code == 401

    assert value("persona_webhooks_total", outcome="invalid_signature") == rejected + 2
    assert value("persona_webhook_signature_failures_total", reason="mismatch") == mismatches + 1
    assert value("persona_webhook_signature_failures_total", reason="missing") == missing + 1
    assert value("persona_webhooks_total", outcome="queued") == queued


def test_other_rejections_count_by_error_code_and_not_as_signature_failures(client):
    invalid = value("persona_webhooks_total", outcome="invalid_envelope")
    failures = sum(value("persona_webhook_signature_failures_total", reason=r) for r in ("missing", "mismatch"))
    body = encode({"data": {"type": "event"}})
    assert client.post(WEBHOOK, data=body, headers=headers(body)).status_code == 400
    assert value("persona_webhooks_total", outcome="invalid_envelope") == invalid + 1
    assert sum(value("persona_webhook_signature_failures_total", reason=r) for r in ("missing", "mismatch")) == failures


def test_queue_gauges_read_redis_at_scrape_time(client, redis, config):
    queue = Queue(config.events_queue, connection=redis)
    failing = queue.enqueue(explode)
    FailedJobRegistry(queue=queue).add(failing, ttl=3600, exc_string="RuntimeError: boom")
    queue.remove(failing)
    queue.enqueue_in(timedelta(hours=1), explode)
    for n in range(3):
        assert post_event(client, f"evt_metrics_depth_{n}").json["status"] == "queued"

    samples = scrape(client)
    labels = (("queue", config.events_queue),)
    assert samples[("persona_queue_up", ())] == 1
    assert samples[("persona_queue_jobs", labels)] == 3
    assert samples[("persona_queue_failed_jobs", labels)] == 1
    assert samples[("persona_queue_scheduled_jobs", labels)] == 1


def test_a_failed_job_from_a_worker_is_counted(client, redis, config):
    from rq import SimpleWorker

    queue = Queue(config.events_queue, connection=redis)
    queue.enqueue(explode)
    SimpleWorker([queue], connection=redis).work(burst=True)
    samples = scrape(client)
    assert samples[("persona_queue_jobs", (("queue", config.events_queue),))] == 0
    assert samples[("persona_queue_failed_jobs", (("queue", config.events_queue),))] == 1


def test_redis_down_drops_the_queue_gauges_but_not_the_scrape(config):
    server = fakeredis.FakeServer()
    client = create_app(config, redis=fakeredis.FakeRedis(server=server)).test_client()
    server.connected = False
    samples = scrape(client)
    assert samples[("persona_queue_up", ())] == 0
    assert not [name for name, _ in samples if name.startswith("persona_queue_") and name != "persona_queue_up"]
    assert ("persona_webhook_duration_seconds_count", ()) in samples  # the rest of the scrape is there


def test_many_apps_scrape_without_duplicate_registration(config):
    for _ in range(3):
        client = create_app(config, redis=fakeredis.FakeRedis()).test_client()
        assert client.get("/metrics").status_code == 200
        assert client.get("/metrics").status_code == 200


@timed_job("metrics_test_ok")
def succeeds(x, *, y):
    return x + y


@timed_job("metrics_test_error")
def fails():
    raise ValueError("nope")


def test_timed_job_observes_ok_and_error_and_reraises():
    ok = value("persona_job_duration_seconds_count", job="metrics_test_ok", result="ok")
    error = value("persona_job_duration_seconds_count", job="metrics_test_error", result="error")

    assert succeeds(1, y=2) == 3
    with pytest.raises(ValueError, match="nope"):
        fails()

    assert value("persona_job_duration_seconds_count", job="metrics_test_ok", result="ok") == ok + 1
    assert value("persona_job_duration_seconds_count", job="metrics_test_ok", result="error") == 0
    assert value("persona_job_duration_seconds_count", job="metrics_test_error", result="error") == error + 1


def test_timed_job_keeps_the_name_rq_finds_the_job_by():
    assert (succeeds.__module__, succeeds.__name__, succeeds.__qualname__) == (__name__, "succeeds", "succeeds")
    assert succeeds.__wrapped__(1, y=1) == 2


def test_timed_job_runs_under_rq_by_dotted_name(redis):
    queue = Queue("metrics-test", connection=redis)
    from rq import SimpleWorker

    before = value("persona_job_duration_seconds_count", job="metrics_test_ok", result="ok")
    job = queue.enqueue(succeeds, 2, y=3)
    assert job.func_name == f"{__name__}.succeeds"
    SimpleWorker([queue], connection=redis).work(burst=True)
    assert job.return_value() == 5
    assert value("persona_job_duration_seconds_count", job="metrics_test_ok", result="ok") == before + 1


def test_count_transition_labels_object_and_statuses():
    labels = {"object": "inquiry", "from": "pending", "to": "completed"}
    first = {"object": "verification", "from": "none", "to": "initiated"}
    before, before_first = (
        value("persona_state_transitions_total", **labels),
        value("persona_state_transitions_total", **first),
    )
    count_transition("inquiry", "pending", "completed")
    count_transition("verification", None, "initiated")
    assert value("persona_state_transitions_total", **labels) == before + 1
    assert value("persona_state_transitions_total", **first) == before_first + 1


def test_verisoul_calls_count_each_attempt_by_result(fake_verisoul, verisoul_client_for):
    def calls(result: str, method: str = "POST") -> float:
        return value("persona_verisoul_calls_total", method=method, result=result)

    ok, http_500, http_429, http_400 = calls("ok"), calls("http_500"), calls("http_429"), calls("http_400", "GET")
    client = verisoul_client_for("account")
    fake_verisoul.configure(fail_next=[500])
    client.block("u1")  # a retried failure, then success
    fake_verisoul.configure(fail_next=[429])
    client.unblock("u1")
    assert (calls("ok"), calls("http_500"), calls("http_429")) == (ok + 2, http_500 + 1, http_429 + 1)

    fake_verisoul.configure(auto_create=False)  # an unknown account: 400, final
    with pytest.raises(VerisoulError):
        client.get_account("nobody")
    assert calls("http_400", "GET") == http_400 + 1


def test_verisoul_connection_errors_count_as_error(verisoul_client_for):
    from scripts.embedded_redis import free_port

    errors = value("persona_verisoul_calls_total", method="POST", result="error")
    client = verisoul_client_for("account", base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(VerisoulUnavailable):
        client.enroll("u1", "inq_1")
    assert value("persona_verisoul_calls_total", method="POST", result="error") == errors + ATTEMPTS


def test_share_metrics_dir_defaults_to_var_metrics_and_creates_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    assert share_metrics_dir(env) == "var/metrics"
    assert env == {"PROMETHEUS_MULTIPROC_DIR": "var/metrics"}
    assert (tmp_path / "var" / "metrics").is_dir()

    chosen = tmp_path / "elsewhere"
    assert share_metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(chosen)}) == str(chosen)
    assert chosen.is_dir()


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def test_a_process_first_on_the_host_makes_the_metrics_directory_instead_of_crashing(tmp_path):
    """The scheduler and replay-event died of FileNotFoundError when no other process had made it yet."""
    directory = tmp_path / "not-yet" / "metrics"
    run = _python("import runtime.metrics", PROMETHEUS_MULTIPROC_DIR=str(directory))
    assert run.returncode == 0, run.stderr
    assert directory.is_dir()


def test_the_scheduler_module_lets_prometheus_client_in_only_after_main_has_chosen_the_directory():
    run = _python("import sys, workers.scheduler; print('prometheus_client' in sys.modules)")
    assert (run.returncode, run.stdout.strip()) == (0, "False"), run.stderr


def test_a_port_taken_costs_the_worker_its_metrics_server_not_its_life(caplog):
    from scripts.embedded_redis import free_port

    port = free_port()
    assert metrics.serve_host_metrics(port, "127.0.0.1")
    assert "persona_events_processed" in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert not metrics.serve_host_metrics(port, "127.0.0.1")
    assert any(record.message == "worker metrics not served" for record in caplog.records)
