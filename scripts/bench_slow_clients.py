"""Benchmark: valid webhooks' latency while slow clients hold connections; prints figures, asserts nothing.

Starts the Procfile's web process (gunicorn with gunicorn.conf.py, as production runs it) on 127.0.0.1
with its own embedded Redis and a temporary SQLite database. Then, in interleaved rounds, it posts
signed webhooks (the sandbox capture, a new event id and a new connection each, one at a time, as
Persona does) with no attack (the baseline) and while --connections connections of one kind are open:

  slow-headers        the request line, then one header byte every --trickle seconds, never finished
  slow-body           headers announcing 100 KB, then one body byte every --trickle seconds
  idle-after-headers  headers announcing 1000 bytes, and no body ever
  mixed               a third of each

A slow connection the server closes is opened again at once: the attack keeps its count. A webhook not
answered within Persona's 5 s deadline counts as 5 s and as missed. Latencies are compared with the
baseline measured in the same run (the machine is shared: absolute figures vary from run to run).

    .venv/bin/python -m scripts.bench_slow_clients [--connections 50] [--requests 40] [--rounds 3] [--hold 12]
    .venv/bin/python -m scripts.bench_slow_clients --connections 500            # beyond the target
    GUNICORN_WORKER_CLASS=sync .venv/bin/python -m scripts.bench_slow_clients --requests 4 --rounds 1

GUNICORN_* and WEB_CONCURRENCY from the environment reach gunicorn.conf.py as in production.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from domain.signature import sign
from scripts.devstack import procfile_command
from scripts.embedded_redis import EmbeddedRedis, free_port
from store.db import migrate

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "sandbox_inquiry_approved.json"
SECRET = "wbhsec_bench_slow_clients"
WEBHOOK = "/webhooks/persona"
DEADLINE = 5.0  # Persona's: seconds before it gives up on a delivery
TARGET_P99 = 1.0  # seconds
KINDS = ("slow-headers", "slow-body", "idle-after-headers")
PHASES = ("baseline", *KINDS, "mixed")
ATTACK_LIMIT = 600.0  # seconds an attack may last, whatever happens


class Attack:
    """`count` slow connections of `kind`, kept open (reopened when the server closes one) by a child
    process (its own interpreter: the attack does not compete with the sender for this one's GIL) until
    stop(), or at most ATTACK_LIMIT seconds."""

    def __init__(self, port: int, kind: str, count: int, trickle: float):
        self.port, self.trickle = port, trickle
        self.kinds = [KINDS[i % 3] for i in range(count)] if kind == "mixed" else [kind] * count
        context = multiprocessing.get_context("fork")
        self._counts = context.Array("l", 3)  # opened, closed by the server, refused
        self._stop, self._ready = context.Event(), context.Event()
        self._process = context.Process(target=self._run, daemon=True)

    @property
    def closed_by_server(self) -> int:
        return self._counts[1]

    def _head(self, kind: str) -> bytes:
        if kind == "slow-headers":
            return f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        length = 100_000 if kind == "slow-body" else 1000
        return (
            f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nPersona-Signature: t=1,v1=00\r\n\r\n"
        ).encode()

    def _open(self, kind: str) -> socket.socket | None:
        try:
            conn = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            conn.sendall(self._head(kind))
            conn.setblocking(False)
        except OSError:
            self._counts[2] += 1
            return None
        self._counts[0] += 1
        return conn

    def _run(self) -> None:
        conns = [self._open(kind) for kind in self.kinds]
        self._ready.set()
        give_up = time.monotonic() + ATTACK_LIMIT
        while not self._stop.is_set() and time.monotonic() < give_up:
            for i, conn in enumerate(conns):
                if conn is None:
                    conns[i] = self._open(self.kinds[i])
                elif self.kinds[i] != "idle-after-headers":
                    try:
                        conn.send(b"X" if self.kinds[i] == "slow-headers" else b" ")
                    except BlockingIOError:
                        pass
                    except OSError:
                        conn.close()
                        conns[i] = None
                        self._counts[1] += 1
            live = {conn.fileno(): (conn, i) for i, conn in enumerate(conns) if conn is not None}
            poller = select.poll()  # not select(): an attack may hold more than 1024 descriptors
            for fd in live:
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(0):
                conn, i = live[fd]
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # the server closed it (an answer alone, e.g. a 400, is read and ignored)
                    conn.close()
                    conns[i] = None
                    self._counts[1] += 1
            self._stop.wait(self.trickle)
        for conn in conns:
            if conn is not None:
                conn.close()

    def start(self) -> Attack:
        self._process.start()
        self._ready.wait(timeout=60)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self.crashed = self._process.exitcode != 0


class Web:
    """The Procfile's web process on its own embedded Redis and SQLite database."""

    def __init__(self, workdir: Path):
        self.redis = EmbeddedRedis(workdir / "redis", appendonly=True).start()
        database_url = f"sqlite:///{workdir / 'bench.db'}"
        migrate(database_url)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PERSONA_WEBHOOK_SECRETS": SECRET,
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        }
        self.log_path = workdir / "web.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(procfile_command("web"), cwd=ROOT, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"bench_slow_clients: the web process did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        self.redis.stop()


class Sender:
    """Signed webhooks, each a new event on a new connection; latency in seconds, DEADLINE if missed."""

    def __init__(self, url: str):
        self.url = f"{url}{WEBHOOK}"
        self.document = json.loads(FIXTURE.read_text().replace("$REFERENCE_ID", "user_bench"))
        self.sent = 0
        self.unexpected: list[str] = []

    def post(self) -> tuple[float, bool]:
        self.sent += 1
        self.document["data"]["id"] = f"evt_bench_slow_{self.sent}"
        body = json.dumps(self.document).encode()
        signed = {"Content-Type": "application/json", "Persona-Signature": sign(SECRET, int(time.time()), body)}
        started = time.monotonic()
        try:
            answer = requests.post(self.url, data=body, headers=signed, timeout=DEADLINE)
        except requests.RequestException as error:
            self.unexpected.append(type(error).__name__)
            return DEADLINE, False
        elapsed = time.monotonic() - started
        if answer.status_code != 200:
            self.unexpected.append(f"HTTP {answer.status_code}")
            return max(elapsed, DEADLINE), False
        return elapsed, elapsed < DEADLINE


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(samples: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "p99": percentile(samples, 0.99),
        "spread": percentile(samples, 0.90) - percentile(samples, 0.10),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50, help="slow connections held during an attack")
    parser.add_argument("--requests", type=int, default=40, help="webhooks per phase and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of interleaved phases")
    parser.add_argument("--trickle", type=float, default=0.5, help="seconds between a trickling client's bytes")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between opening an attack and posting")
    parser.add_argument(
        "--hold",
        type=float,
        default=12.0,
        help="seconds a phase's webhooks are spread over: longer than the server's deadlines, so it cuts slow "
        "connections off (and the attack reopens them) while webhooks arrive",
    )
    parser.add_argument("--phase-seconds", type=float, default=90.0, help="most seconds a phase posts for")
    args = parser.parse_args(argv)

    worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "(gunicorn.conf.py's default)")
    print(
        f"bench_slow_clients: worker class {worker_class}, WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', '2')}, "
        f"{args.connections} slow connections per attack, {args.requests} webhooks x {args.rounds} rounds per phase, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    latencies: dict[str, list[float]] = {phase: [] for phase in PHASES}
    missed = dict.fromkeys(PHASES, 0)
    attacks: dict[str, list[Attack]] = {phase: [] for phase in PHASES}
    with tempfile.TemporaryDirectory(prefix="bench-slow-clients-") as workdir:
        web = Web(Path(workdir))
        sender = Sender(web.url)
        try:
            for _ in range(3):  # warm both workers up
                sender.post()
            for round_ in range(args.rounds):
                order = list(PHASES)
                random.Random(round_).shuffle(order)  # interleaved: no phase always first or last
                for phase in order:
                    attack = None
                    if phase != "baseline":
                        attack = Attack(web.port, phase, args.connections, args.trickle).start()
                        attacks[phase].append(attack)
                        time.sleep(args.settle)
                    phase_start = time.monotonic()
                    for k in range(args.requests):
                        now = time.monotonic()
                        if now > phase_start + args.phase_seconds:
                            break
                        time.sleep(
                            max(0.0, phase_start + k * args.hold / args.requests - now) + random.uniform(0, 0.02)
                        )
                        elapsed, in_time = sender.post()
                        latencies[phase].append(elapsed)
                        missed[phase] += not in_time
                    if attack is not None:
                        attack.stop()
                print(f"  round {round_ + 1}/{args.rounds} done", flush=True)
        finally:
            web.stop()

    base = summarise(latencies["baseline"])
    print("\nvalid webhook latency (new connection per webhook; ratio = phase / no-attack baseline, same run)")
    print(
        f"{'phase':<20}{'n':>5}{'missed 5s':>10}{'median ms':>11}{'p99 ms':>9}{'spread ms':>11}"
        f"{'median x':>10}{'p99 x':>8}{'spread x':>10}{'p99<=1s':>9}{'server closed':>15}"
    )
    for phase in PHASES:
        if not latencies[phase]:
            continue
        s = summarise(latencies[phase])
        ratio = lambda key, s=s: s[key] / base[key] if base[key] else float("nan")  # noqa: E731
        closed = sum(a.closed_by_server for a in attacks[phase])
        print(
            f"{phase:<20}{len(latencies[phase]):>5}{missed[phase]:>10}{s['median'] * 1000:>11.1f}"
            f"{s['p99'] * 1000:>9.1f}{s['spread'] * 1000:>11.1f}{ratio('median'):>10.2f}{ratio('p99'):>8.2f}"
            f"{ratio('spread'):>10.2f}{'yes' if s['p99'] <= TARGET_P99 else 'NO':>9}"
            f"{closed if phase != 'baseline' else '':>15}"
        )
    under_attack = [x for phase in PHASES[1:] for x in latencies[phase]]
    if under_attack:
        p99 = percentile(under_attack, 0.99)
        verdict = "met" if p99 <= TARGET_P99 else "NOT met"
        print(f"\nall attack phases: p99 {p99 * 1000:.1f} ms absolute; target p99 <= {TARGET_P99:.0f} s {verdict}")
    print("spread = p90 - p10; 'server closed' = slow connections the server cut off (each reopened at once)")
    crashed = [phase for phase in PHASES for attack in attacks[phase] if attack.crashed]
    if crashed:
        print(f"WARNING: the attack process failed during {sorted(set(crashed))}: those figures are not valid")
    if sender.unexpected:
        print(f"unexpected answers: {sorted(set(sender.unexpected))} ({len(sender.unexpected)} in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
