"""`/metrics` under the Procfile's processes: gunicorn with two workers and an rq worker sharing one fresh
PROMETHEUS_MULTIPROC_DIR. Every scrape, whichever gunicorn worker answers it, must give the whole host's
counts: the webhooks both workers answered, and the jobs the rq worker ran.

Which worker answers is made certain, not left to chance: a gunicorn sync worker serves one connection at
a time from accept to close, so a connection held open without a request pins the worker that accepted
it, and the next connection goes to the other one. The accepting process is read from /proc (the
server-side socket's inode among each worker's open files), so this module needs Linux.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from http.client import HTTPConnection
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.payloads import SECRET, WEBHOOK, encode, envelope, headers

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to tell which worker answered"),
]

EVENTS = 40
DUPLICATES = 5
FORGED = 5
SCRAPES = 10
QUEUE = "persona-events"
DRAIN_TIMEOUT = 60  # seconds


@pytest.fixture
def metrics_stack(stack, tmp_path):
    """The stack fixture's gunicorn (WEB_CONCURRENCY=2) and one rq worker, sharing a fresh metrics dir."""
    metrics_dir = tmp_path / "prometheus"
    stack.env.update(WEB_CONCURRENCY="2", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    stack.env.pop("VERISOUL_API_URL", None)  # no Verisoul: the syncs are skipped
    stack.metrics_dir = metrics_dir
    stack.start("web")
    stack.start("worker")
    stack.start("scheduler")
    stack.wait_ready()
    return stack


# --- which gunicorn worker holds a connection ------------------------------------------------------------


def _children(parent: int) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                pids.add(int(entry))
    return pids


def gunicorn_workers(stack, count: int = 2, timeout: float = 20) -> set[int]:
    """The pids of the master's `count` workers, once it has that many."""
    master = stack.processes[0].pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _children(master)
        if len(workers) == count:
            return workers
        time.sleep(0.1)
    raise TimeoutError(f"gunicorn {master} has workers {_children(master)}, expected {count}")


def _server_socket_inode(server_port: int, client_port: int) -> int:
    """The inode of the server's end of 127.0.0.1:client_port → :server_port; 0 until it is accepted."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return inode
    return 0


def _accepted_by(connection: HTTPConnection, server_port: int, workers: set[int], timeout: float = 10) -> int:
    client_port = connection.sock.getsockname()[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inode = _server_socket_inode(server_port, client_port)
        if inode:
            for pid in workers:
                try:
                    if any(os.readlink(fd.path) == f"socket:[{inode}]" for fd in os.scandir(f"/proc/{pid}/fd")):
                        return pid
                except OSError:
                    continue
        time.sleep(0.01)
    raise TimeoutError(f"no worker of {workers} accepted the connection from port {client_port}")


def request_on(stack, workers: set[int], want: int | None, method: str, path: str, body=None, headers=None):
    """One request over a new connection answered by worker `want` (any when None): (pid, status, text).

    gevent workers accept as many connections as come, so the others are paused (SIGSTOP) for the
    request: only `want` can accept it. They resume (SIGCONT) at once, long before gunicorn's timeout."""
    others = [pid for pid in workers if want is not None and pid != want]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        connection = HTTPConnection("127.0.0.1", stack.port, timeout=10)
        connection.connect()
        pid = _accepted_by(connection, stack.port, workers)
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        text = response.read().decode()
        connection.close()
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)
    assert want is None or pid == want, f"worker {pid} accepted a connection while only {want} could"
    return pid, response.status, text


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_on(stack, workers: set[int], want: int | None) -> tuple[int, dict]:
    pid, status, text = request_on(stack, workers, want, "GET", "/metrics")
    assert status == 200, text
    return pid, samples(text)


def counted(metrics_dir: Path, pid: int, name: str, **labels) -> float:
    """One process's own value of a counter, from its file alone."""
    (family,) = [f for f in MultiProcessCollector.merge([str(metrics_dir / f"counter_{pid}.db")]) if f.name == name]
    return sum(s.value for s in family.samples if s.name == name + "_total" and s.labels == labels)


def webhook_counts(scraped: dict) -> dict[str, float]:
    return {
        outcome: scraped.get(("persona_webhooks_total", (("outcome", outcome),)), 0.0)
        for outcome in ("queued", "duplicate", "invalid_signature")
    }


def event_body(n: int) -> bytes:
    attributes = {"status": "approved", "reference-id": f"user_metrics_{n}"}
    return encode(envelope(event_id=f"evt_metrics_{n}", object_id=f"inq_metrics_{n}", attributes=attributes))


def post_everything(stack, workers: set[int]) -> None:
    """EVENTS distinct events, DUPLICATES repeats and FORGED bad signatures, alternating between the
    two workers, so each worker's own files hold only part of the counts."""
    order = sorted(workers)
    posts = [(event_body(n), SECRET) for n in range(EVENTS)]
    posts += [(event_body(n), SECRET) for n in range(DUPLICATES)]
    posts += [(event_body(EVENTS + n), "wbhsec_forged") for n in range(FORGED)]
    for i, (body, secret) in enumerate(posts):
        _, status, text = request_on(stack, workers, order[i % 2], "POST", WEBHOOK, body, headers(body, secret))
        assert status == (200 if secret == SECRET else 401), text


def test_every_scrape_sums_both_gunicorn_workers(metrics_stack):
    stack = metrics_stack
    workers = gunicorn_workers(stack)
    post_everything(stack, workers)
    for pid in workers:  # each worker counted only its own half...
        assert counted(stack.metrics_dir, pid, "persona_webhooks", outcome="queued") == EVENTS / 2

    answered = []
    for i in range(SCRAPES):  # ...yet every scrape, from either worker, counts both halves
        want = None if not answered else (workers - {answered[-1]}).pop()
        pid, scraped = scrape_on(stack, workers, want)
        answered.append(pid)
        assert webhook_counts(scraped) == {"queued": EVENTS, "duplicate": DUPLICATES, "invalid_signature": FORGED}, i
        assert scraped[("persona_webhook_signature_failures_total", (("reason", "mismatch"),))] == FORGED
        assert scraped[("persona_webhook_duration_seconds_count", ())] == EVENTS + DUPLICATES + FORGED
        assert scraped[("persona_queue_up", ())] == 1
    assert set(answered) == workers and len(answered) == SCRAPES

    # A worker that exits takes nothing with it: its files stay summed, so counters never go down.
    os.kill(answered[-1], signal.SIGTERM)
    deadline = time.monotonic() + 20
    while answered[-1] in _children(stack.processes[0].pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    replaced = gunicorn_workers(stack)
    assert answered[-1] not in replaced
    for pid in replaced:
        _, scraped = scrape_on(stack, replaced, pid)
        assert webhook_counts(scraped) == {"queued": EVENTS, "duplicate": DUPLICATES, "invalid_signature": FORGED}


def test_the_rq_workers_job_metrics_reach_the_web_scrape(metrics_stack):
    stack = metrics_stack
    workers = gunicorn_workers(stack)
    for n in range(EVENTS):
        body = event_body(n)
        answer = requests.post(f"{stack.url}{WEBHOOK}", data=body, headers=headers(body), timeout=5)
        assert answer.json()["status"] == "queued", answer.text

    scraped: dict = {}
    process_event: dict = {}
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        _, scraped = scrape_on(stack, workers, None)
        waiting = scraped.get(("persona_queue_jobs", (("queue", QUEUE),)))
        process_event = {
            result: scraped.get(
                ("persona_job_duration_seconds_count", (("job", "process_event"), ("result", result))), 0.0
            )
            for result in ("ok", "error")
        }
        if waiting == 0 and sum(process_event.values()) >= EVENTS:
            break
        time.sleep(0.3)
    assert scraped[("persona_queue_up", ())] == 1
    assert scraped[("persona_queue_jobs", (("queue", QUEUE),))] == 0
    assert scraped[("persona_queue_failed_jobs", (("queue", QUEUE),))] == 0
    # Needs workers/jobs.py's process_event decorated with runtime.metrics.timed_job("process_event").
    assert process_event == {"ok": EVENTS, "error": 0}, f"logs in {stack.log_dir}"


def test_a_worker_on_a_host_without_a_web_process_serves_the_hosts_metrics(stack, tmp_path):
    """Issue 11: workers on other hosts had no /metrics; with WORKER_METRICS_PORT one serves them."""
    from scripts.embedded_redis import free_port

    port = free_port()
    stack.env.update(WORKER_METRICS_PORT=str(port), HOST="127.0.0.1", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "m"))
    stack.start("worker")
    deadline, answer = time.monotonic() + 30, None
    while time.monotonic() < deadline and answer is None:
        try:
            answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        except requests.RequestException:
            time.sleep(0.2)
    assert answer is not None and answer.status_code == 200, f"no metrics on {port}; logs in {stack.log_dir}"
    # The host's multiprocess files, as the web's /metrics reads them (labelled series appear with their first sample).
    families = {family.name for family in text_string_to_metric_families(answer.text)}
    assert "persona_webhook_duration_seconds" in families, families
