"""Round-trips row of scripts/bench.py: SQL round trips per event, on PostgreSQL, counted at the wire.

One worker process (the Procfile's command) reaches PostgreSQL through scripts/roundtrips.py's proxy,
which counts the worker's flights (each time it sends after the server answered): BEGIN, COMMIT, the
pool's pre-ping and every statement count, however SQLAlchemy issues them. Phases of a small and a
large batch of events alternate between barriers (scripts/bench_jobs.py), with the proxy read while
the worker is parked at each, so start-up, warm-up and the Verisoul syncs queued afterwards are outside;
round trips per event = (flights(large) - flights(small)) / (events(large) - events(small)), which also
cancels anything a phase pays once. The reference column is flights / events of the large batch alone.

    .venv/bin/python -m scripts.bench --only roundtrips
"""

from __future__ import annotations

from collections import Counter

from scripts.bench_events import lifecycle_stream
from scripts.bench_stack import Context, progress
from scripts.bench_table import Row, Target, median, spread, verdict
from scripts.bench_worker import BenchError, Phase, WorkerRun, paired_phases
from scripts.roundtrips import Flight, RoundTripProxy, gist

SMALL_USERS, LARGE_USERS = 2, 8  # x 4 inquiries x 4 lifecycle events: 32 and 128 events
TARGET = Target.at_most(6)


def _label(flight: Flight) -> str:
    """What one flight carries: its statements' gists (several when pipelined), else its message types
    (e.g. `S`: a lone Sync, which ends a pipeline)."""
    if not flight.statements:
        return f"messages {flight.messages or '-'}"
    return " + ".join(gist(statement) for statement in flight.statements)


def _per_event(flights: list[Flight], events: int) -> str:
    """A phase's flights by what they carry, per event, most frequent first."""
    counts = Counter(_label(flight) for flight in flights)
    return "; ".join(f"{count / events:.2f} x [{label}]" for label, count in counts.most_common(14))


def roundtrip_rows(ctx: Context) -> None:
    what = "SQL round trips per event, PostgreSQL, 1 worker, at the wire (BEGIN, COMMIT, any pre-ping included)"
    progress(f"roundtrips: {SMALL_USERS * 16} vs {LARGE_USERS * 16} events through a counting proxy x {ctx.reps} reps")
    sizes = {"small": SMALL_USERS, "large": LARGE_USERS}
    streams = {
        (rep, label): lifecycle_stream(f"{label[0]}{rep}x", users, 4)
        for rep in range(ctx.reps)
        for label, users in sizes.items()
    }
    order = paired_phases(ctx.reps, "small", "large")
    phases = [Phase(f"{label}{rep}", events=streams[(rep, label)]) for rep, label in order]
    with RoundTripProxy.for_url(ctx.postgres_url, postgres=True, keep=50_000) as proxy:
        marks: dict[int, int] = {}
        run = WorkerRun(ctx, ctx.fresh_database("postgresql"), 1, worker_database_url=proxy.url)
        try:
            # While the worker is parked at each barrier, so a phase's count is exactly its own.
            run.run(
                phases, lifecycle_stream("w", 2, 1), at_barrier=lambda index: marks.__setitem__(index, proxy.flights())
            )
        except BenchError as error:
            progress(f"roundtrips: run failed: {error}")
            ctx.table.add(Row.invalid(what, str(error)))
            return
        flights = {order[p - 1]: marks[p] - marks[p - 1] for p in range(1, len(phases) + 1)}
        last_large = max(p for p in range(1, len(phases) + 1) if order[p - 1][1] == "large")
        detail = [f for f in proxy.recent() if marks[last_large - 1] < f.number <= marks[last_large]]
    per_event, whole = [], []
    for rep in range(ctx.reps):
        small, large = streams[(rep, "small")], streams[(rep, "large")]
        per_event.append((flights[(rep, "large")] - flights[(rep, "small")]) / (len(large) - len(small)))
        whole.append(flights[(rep, "large")] / len(large))
    ctx.table.add(Row(
        what, spread(per_event, "round trips/event", 2), spread(whole, "flights/event, large batch alone", 2),
        "-", TARGET.text, verdict(TARGET, median(per_event)),
    ))  # fmt: skip
    ctx.table.note(
        f"round trips per event by what each carries (last large batch, {LARGE_USERS * 16} events; `+`: pipelined "
        f"in one flight): {_per_event(detail, LARGE_USERS * 16)}"
    )
