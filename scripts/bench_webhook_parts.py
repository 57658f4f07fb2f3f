"""What each part of a webhook request costs at saturation: the service with parts switched off, against
bare Flask, in one interleaved run; prints figures, asserts nothing.

Each variant is the service (`create_app()`, the Procfile's gunicorn and gunicorn.conf.py) with some of
its steps replaced by nothing, in the gunicorn process only (the factory below):

- `noqueue`: no enqueue (no Redis round trip; the answer says `queued` all the same);
- `novalidate`: no marshmallow validation and no minimisation (the body is still parsed and normalised);
- `nolog`, `nometrics`: no log line, no Prometheus metrics;
- `noverify`: no signature check.

A variant's ratio against bare Flask says what the steps left in cost; the steps switched off cost the
difference. `nolog,nometrics,noqueue,novalidate` shows what a request with nothing but reading, checking
and parsing the body reaches: the most any enqueue and validation could leave room for.

    .venv/bin/python -m scripts.bench_webhook_parts [--size 7|65] [--reps 3] [--seconds 4] [VARIANT ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from scripts import bench_web
from scripts.bench_events import INQUIRY_7KB, INQUIRY_65KB, INQUIRY_SLOTS, Template
from scripts.bench_load import Wrk
from scripts.bench_stack import CEILING_APP, BenchRedis, Children, Context, SqliteTemplate, Web, progress
from scripts.bench_table import Table

DEFAULT_VARIANTS = ("", "noqueue", "novalidate", "nolog,nometrics", "nolog,nometrics,noqueue,novalidate")


class _Nothing:
    """A metric that records nothing."""

    def labels(self, *_labels):
        return self

    def inc(self, *_amount):
        pass

    def observe(self, *_value):
        pass


def create_app():
    """The service's app with the steps named in BENCH_VARIANT switched off (gunicorn's factory)."""
    from types import SimpleNamespace

    from app import create_app as service_app
    from app import webhooks
    from domain.events import normalise_envelope

    off = set(filter(None, os.environ.get("BENCH_VARIANT", "").split(",")))
    if "noqueue" in off:
        webhooks._queue = lambda event: "queued"
    if "novalidate" in off:

        def parse_only(body: bytes) -> dict:
            document = normalise_envelope(webhooks.parse_json(body))
            return {"event_id": document["data"]["id"], "name": "inquiry.completed"}

        webhooks._parse = parse_only
    if "nolog" in off:
        webhooks.log.disabled = True
    if "nometrics" in off:
        webhooks.metrics = SimpleNamespace(
            WEBHOOKS=_Nothing(), SIGNATURE_FAILURES=_Nothing(), WEBHOOK_DURATION=_Nothing()
        )
    if "noverify" in off:
        webhooks._verify = lambda body: None
    return service_app()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "variants", nargs="*", default=list(DEFAULT_VARIANTS), help="comma lists of parts off ('' = the service)"
    )
    parser.add_argument("--size", choices=("7", "65"), default="7")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="persona-bench-parts-"))
    children = Children(directory)
    try:
        redis = BenchRedis(children, directory / "redis")
        ctx = Context(directory, children, redis, "", SqliteTemplate(directory), False, args.reps, Table())
        env = ctx.env(ctx.sqlite.fresh())
        webs = {"bare Flask": Web(children, "ceiling", env, CEILING_APP)}
        for n, variant in enumerate(args.variants):
            name = f"service, off: {variant}" if variant else "service"
            webs[name] = Web(
                children, f"variant{n}", {**env, "BENCH_VARIANT": variant}, "scripts.bench_webhook_parts:create_app()"
            )
        template = Template(INQUIRY_7KB if args.size == "7" else INQUIRY_65KB, INQUIRY_SLOTS)
        _events, data = bench_web._data(ctx, template, 40000, "parts")
        wrk = Wrk(children, directory, connections=bench_web.CONNECTIONS)
        rates: dict[str, list[float]] = {name: [] for name in webs}
        for rep in range(args.reps):
            for name in list(webs) if rep % 2 == 0 else list(webs)[::-1]:
                progress(f"parts: {name}, rep {rep + 1}/{args.reps}")
                run = bench_web._saturate(ctx, wrk, webs[name], data, args.seconds, service=name != "bare Flask")
                rates[name].append(run.rate)
        bare = statistics.median(rates["bare Flask"])
        print(
            f"webhook parts, {args.size} KB, {args.reps} reps of {args.seconds:.0f} s, os.cpu_count()={os.cpu_count()}"
        )
        for name, values in rates.items():
            rate = statistics.median(values)
            print(f"{name:50} {rate:7.0f} req/s ({min(values):.0f}-{max(values):.0f})  ratio {rate / bare:.2f}")
    finally:
        children.stop_all()


if __name__ == "__main__":
    main()
