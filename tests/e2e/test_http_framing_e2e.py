"""Bad HTTP framing at the Procfile's gunicorn: a 400 JSON {error, detail}, logged and counted like any
rejection, never a 5xx, whatever gunicorn worker class serves it.

Raw bytes over a socket, unsigned (framing is checked before anything else can be): a chunked body with
a chunk size that is not hex, one whose chunk data is not followed by CRLF, one cut off before its last
chunk, and a body shorter than its Content-Length. Each used to escape app/webhooks.py `_read_capped` as
gunicorn's own exception (a 500, no log line, no metric), or as werkzeug's HTML 400.
"""

from __future__ import annotations

import json
import socket
from http.client import HTTPResponse

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.payloads import WEBHOOK

pytestmark = pytest.mark.e2e

HEAD = f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
CHUNKED = HEAD + "Transfer-Encoding: chunked\r\n\r\n"
BAD_BODIES = {
    "chunk-size-not-hex": CHUNKED + 'zz\r\n{"data": 1}\r\n0\r\n\r\n',
    "chunk-size-overflowing": CHUNKED + "1" * 40 + "\r\nxx\r\n0\r\n\r\n",
    "missing-chunk-terminator": CHUNKED + '5\r\n{"a":XX0\r\n\r\n',
    "no-last-chunk": CHUNKED + '5\r\n{"a":\r\n',  # then the client stops sending
    "shorter-than-content-length": HEAD + 'Content-Length: 500\r\n\r\n{"data": ',  # likewise
}


def send_raw(port: int, raw: str) -> tuple[int, dict]:
    """Send `raw`, close our sending side (the server sees the end of the body early), read one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(raw.encode())
        conn.shutdown(socket.SHUT_WR)
        response = HTTPResponse(conn)
        response.begin()
        body = response.read(response.length or 65536)
        assert response.getheader("Content-Type") == "application/json", body
        return response.status, json.loads(body)


def webhooks_counted(url: str, outcome: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "persona_webhooks_total" and sample.labels.get("outcome") == outcome:
                return sample.value
    return 0.0


@pytest.fixture(params=["gevent", "gthread", "sync"])
def web(request, stack, tmp_path):
    """The Procfile's web process alone, with the gunicorn worker class under test."""
    stack.env.update(
        GUNICORN_WORKER_CLASS=request.param, WEB_CONCURRENCY="1", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom")
    )
    stack.start("web")
    stack.wait_ready()
    return stack


@pytest.mark.parametrize("real_database_url", ["sqlite"], indirect=True)  # no database is touched
def test_malformed_request_bodies_are_400_json_logged_and_counted(web, real_database_url):
    for name, raw in BAD_BODIES.items():
        status, payload = send_raw(web.port, raw)
        assert status == 400, (name, payload)
        assert payload["error"] == "invalid_body" and set(payload) == {"error", "detail"}, (name, payload)
    assert webhooks_counted(web.url, "invalid_body") == len(BAD_BODIES)
    lines = [json.loads(line) for line in (web.log_dir / "web-0.log").read_text().splitlines() if line.startswith("{")]
    rejected = [
        line for line in lines if line.get("logger") == "app.webhooks" and line.get("outcome") == "invalid_body"
    ]
    assert len(rejected) == len(BAD_BODIES) and all(line["status"] == 400 and line["reason"] for line in rejected)
    assert requests.get(f"{web.url}/readyz", timeout=5).ok  # and the server is still serving
