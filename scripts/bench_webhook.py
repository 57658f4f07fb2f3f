"""Benchmark the webhook path, step by step; prints figures, asserts nothing.

For a 7 KB body (tests/fixtures/docs_inquiry_completed.json) and the 65 KB sandbox capture, in µs per call:
each step of a request (signature check, JSON, key normalisation, validation with minimisation, the
body's hash, the enqueue into a fresh embedded Redis with the append-only file on), the whole request
through the Flask app (test client, no network; its log line written to /dev/null), and a bare Flask
app that only reads the body and answers JSON, the ceiling a request is compared with (`bare / request`;
issue 10 aims at >= 0.7 for 7 KB and >= 0.6 for 65 KB under gunicorn). Every request and enqueue is a new
event id, so each is really queued. Steps and sizes take turns, round after round, and each figure is
the median of the rounds' medians, so a machine shared with other work slows them all alike.

    .venv/bin/python -m scripts.bench_webhook [--rounds 9] [--calls 200] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from redis import Redis

from app import create_app
from app.webhooks import parse_json
from domain.events import QueuedEvent, body_sha256, normalise_envelope
from domain.schemas import load_event
from domain.signature import sign, verify
from runtime.config import Config
from scripts.embedded_redis import EmbeddedRedis
from store.queue import EventQueue

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
SIZES = {"7 KB": "docs_inquiry_completed.json", "65 KB": "sandbox_inquiry_approved.json"}
SECRET = "wbhsec_bench"
WEBHOOK = "/webhooks/persona"


class Body:
    """A fixture as Persona sent it, and endless copies of it with a new event id each."""

    def __init__(self, fixture: str):
        self.raw = (FIXTURES / fixture).read_bytes().replace(b"$REFERENCE_ID", b"bench_user")
        self.event_id = json.loads(self.raw)["data"]["id"].encode()
        self.count = 0

    def fresh(self) -> bytes:
        self.count += 1
        return self.raw.replace(self.event_id, b"evt_bench_%08d_%s" % (self.count, os.urandom(4).hex().encode()))


def pipeline_steps(body: bytes) -> dict[str, Callable[[], object]]:
    """The pure steps of a request on `body`, each on the previous one's output."""
    header = sign(SECRET, int(time.time()), body)
    document = parse_json(body)
    normalised = normalise_envelope(document)
    return {
        "verify signature": lambda: verify(body, header, [SECRET], time.time(), 300),
        "JSON": lambda: parse_json(body),
        "normalise keys": lambda: normalise_envelope(document),
        "validate + minimise": lambda: load_event(normalised, ""),
        "body sha256": lambda: body_sha256(body),
    }


def bare_app() -> Flask:
    """The ceiling: what any Flask webhook costs, reading the body and answering JSON."""
    app = Flask("bare")

    @app.post(WEBHOOK)
    def receive():
        request.get_data()
        return jsonify(status="queued", event_id="evt_bare")

    return app


Input = TypeVar("Input")


class _Prepared(Generic[Input]):
    """A step whose input is made before the clock starts."""

    def __init__(self, prepare: Callable[[], Input], call: Callable[[Input], object]):
        self.prepare, self.call = prepare, call


def request_steps(body: Body, client, bare, event_queue: EventQueue) -> dict[str, _Prepared[Any]]:
    """Steps that need a new event each call, made before the clock starts."""

    def new_event() -> QueuedEvent:
        return load_event(normalise_envelope(parse_json(body.fresh())), "")

    return {
        "enqueue_once": _Prepared(new_event, event_queue.enqueue_once),
        "whole request": _posting(body, client),
        "bare Flask": _posting(body, bare),
    }


def _posting(body: Body, client) -> _Prepared[tuple[bytes, dict]]:
    """A signed POST of a new copy of the body, answered `queued`."""

    def prepare() -> tuple[bytes, dict]:
        raw = body.fresh()
        return raw, {"Content-Type": "application/json", "Persona-Signature": sign(SECRET, int(time.time()), raw)}

    def post(prepared) -> None:
        raw, headers = prepared
        response = client.post(WEBHOOK, data=raw, headers=headers)
        assert response.status_code == 200 and response.json["status"] == "queued", response.json

    return _Prepared(prepare, post)


def _median_us(step, calls: int) -> float:
    samples = []
    for _ in range(calls):
        if isinstance(step, _Prepared):
            argument = step.prepare()
            started = time.perf_counter()
            step.call(argument)
        else:
            started = time.perf_counter()
            step()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


@contextlib.contextmanager
def service() -> Iterator[tuple[FlaskClient, FlaskClient, EventQueue]]:
    """The app's and the bare app's test clients and an EventQueue, on a fresh embedded Redis (AOF on)."""
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as devnull:
        embedded = EmbeddedRedis(Path(tmp) / "redis", appendonly=True).start()
        try:
            redis = Redis.from_url(embedded.url)
            config = Config(webhook_secrets=(SECRET,), redis_url=embedded.url, database_url=f"sqlite:///{tmp}/db")
            with contextlib.redirect_stderr(devnull):
                app = create_app(config, redis=redis)  # its log handler writes to the stderr of the moment
            yield app.test_client(), bare_app().test_client(), EventQueue(redis, config)
        finally:
            embedded.stop()


def measure(rounds: int, calls: int) -> dict[str, dict[str, float]]:
    """{step: {size: µs}}, median of the rounds' medians."""
    bodies = {size: Body(fixture) for size, fixture in SIZES.items()}
    samples: dict[str, dict[str, list[float]]] = {}
    with service() as (client, bare, event_queue):
        for _ in range(rounds):
            for size, body in bodies.items():
                steps = pipeline_steps(body.raw) | request_steps(body, client, bare, event_queue)
                for name, step in steps.items():
                    samples.setdefault(name, {}).setdefault(size, []).append(_median_us(step, calls))
    figures = {
        name: {size: statistics.median(runs) for size, runs in per_size.items()} for name, per_size in samples.items()
    }
    figures["bare / request"] = {size: figures["bare Flask"][size] / figures["whole request"][size] for size in SIZES}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=200, help="calls of each step per round")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    figures = measure(args.rounds, args.calls)
    if args.json:
        json.dump(figures, sys.stdout)
        return
    print(f"{'µs per call, median of ' + str(args.rounds) + ' rounds':<34}" + "".join(f"{size:>10}" for size in SIZES))
    for name, by_size in figures.items():
        print(f"{name:<34}" + "".join(f"{by_size[size]:>10.{2 if name == 'bare / request' else 1}f}" for size in SIZES))


if __name__ == "__main__":
    main()
