"""Benchmark the webhook path; prints figures, asserts nothing.

Measures, on the 65 KB sandbox capture: the pure steps (signature check, JSON + normalisation +
validation + minimisation) and whole requests through the Flask app (test client, no network) into a
fresh embedded Redis with the append-only file on, each request a new event id so each is really queued.

    .venv/bin/python -m scripts.bench_webhook [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from redis import Redis

from app import create_app
from app.config import Config
from app.events import body_sha256, minimise, normalise_keys
from app.schemas import load_envelope
from app.signature import sign, verify
from scripts.embedded_redis import EmbeddedRedis

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sandbox_inquiry_approved.json"
SECRET = "wbhsec_bench"


def _percentiles(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return (
        f"p50 {pick(0.50):.3f} ms  p95 {pick(0.95):.3f} ms  p99 {pick(0.99):.3f} ms  "
        f"mean {statistics.fmean(ordered):.3f} ms  ({len(ordered)} runs)"
    )


def _time(step: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _bodies(count: int) -> list[bytes]:
    """The capture as Persona sent it (pretty-printed, 65 KB), one new event id per request."""
    raw = FIXTURE.read_bytes().replace(b"$REFERENCE_ID", b"bench_user")
    original_id = json.loads(raw)["data"]["id"].encode()
    return [raw.replace(original_id, f"evt_bench{n:023d}".encode()) for n in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    bodies = _bodies(args.requests)
    body = bodies[0]
    header = sign(SECRET, int(time.time()), body)
    print(f"body: {len(body)} bytes (sandbox inquiry.approved)")
    print("verify signature:        ", _percentiles(_time(lambda: verify(body, header, [SECRET], time.time(), 300), 2000)))
    parse = lambda: minimise(load_envelope(normalise_keys(json.loads(body))), body_sha256(body))  # noqa: E731
    print("parse+validate+minimise: ", _percentiles(_time(parse, 500)))

    embedded = EmbeddedRedis(Path(tempfile.mkdtemp()), appendonly=True).start()
    redis_url = embedded.url
    redis = Redis.from_url(redis_url)
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(webhook_secrets=(SECRET,), redis_url=redis_url, database_url=f"sqlite:///{tmp}/bench.db")
        client = create_app(config, redis=redis).test_client()
        import logging

        logging.getLogger("app").setLevel(logging.WARNING)  # the per-request line would dominate the output
        samples = []
        for payload in bodies:
            headers = {"Content-Type": "application/json", "Persona-Signature": sign(SECRET, int(time.time()), payload)}
            started = time.perf_counter()
            response = client.post("/webhooks/persona", data=payload, headers=headers)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.json["status"] == "queued", response.json
        print("whole request, into embedded Redis (appendonly yes):", _percentiles(samples))
    embedded.stop()


if __name__ == "__main__":
    main()
