"""The processes scripts/bench.py runs and stops: its own redis-server, the Procfile's web and worker
commands, PostgreSQL and SQLite databases of its own.

Nothing here touches anything the bench did not start: Redis is a new `redis-server` on a free port
(never the shared one on 6379), PostgreSQL work happens only in the database named by --database-url
(`bench` by default, created when missing), SQLite lives in the bench's temporary directory. Every child
is started in its own session and recorded in a `Children` registry, which stops each one by its own id
(its process group, so gunicorn's workers go with their master) at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import redis as redis_lib
import requests
from sqlalchemy.engine import make_url

from scripts.devstack import procfile_command
from scripts.embedded_redis import free_port
from store.db import migrate

if TYPE_CHECKING:
    from scripts.bench_table import Table

ROOT = Path(__file__).resolve().parent.parent
SECRET = "wbhsec_bench"
# Bodies are signed once, when the bench starts, and posted for up to an hour or more: a tolerance of 30
# days keeps every signature valid without re-signing (which would cost the load generator an HMAC each).
SIGNATURE_TOLERANCE = 30 * 24 * 3600
CEILING_APP = "scripts.bench_ceiling:create_app()"


class Children:
    """Every process the bench starts, stopped by pid (and process group) in reverse start order."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self._processes: list[tuple[str, subprocess.Popen, int]] = []  # name, process, its stop signal

    def start(self, name: str, command: list[str], env: dict[str, str], stop_signal: int = signal.SIGTERM):
        """Start `command`, its output in <log_dir>/<name>.log; `stop_signal` is what stop() sends it."""
        log = open(self.log_dir / f"{name}.log", "ab")
        # Own session: Ctrl-C at the terminal reaches only the bench, which then stops them in order.
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self._processes.append((name, process, stop_signal))
        return process

    def stop(self, process: subprocess.Popen, grace: float = 15.0) -> None:
        """Its stop signal to the child's process group (gunicorn's workers too), SIGKILL after `grace` seconds.

        Only while the child is not yet reaped: until then its pid, the group's id, cannot be reused by
        another process. (gunicorn's master stops its workers before it exits; the others have no children.)"""
        if process.poll() is None:
            _signal_group(process.pid, self._stop_signal(process))
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self._processes = [entry for entry in self._processes if entry[1] is not process]

    def _stop_signal(self, process: subprocess.Popen) -> int:
        return next(stop_signal for _name, p, stop_signal in self._processes if p is process)

    def stop_all(self) -> None:
        for _name, process, _stop_signal in reversed(list(self._processes)):
            self.stop(process, grace=10.0)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class BenchRedis:
    """A `redis-server` from PATH on a free loopback port, data in the bench's directory.

    Append-only file on (fsync every second, Redis's default), as the dev stack and production run it,
    so each enqueue pays what it pays in production; no RDB snapshots."""

    def __init__(self, children: Children, data_dir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench: redis-server is not on PATH (apt-get install -y redis-server)")
        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(data_dir),
            "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--logfile", "redis.log",
        ]  # fmt: skip
        self.process = children.start("redis", command, dict(os.environ))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis_lib.Redis.from_url(self.url)
        self._wait()

    def _wait(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.ping()
                return
            except redis_lib.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        "bench: redis-server did not start; see redis.log in the bench directory"
                    ) from None
                time.sleep(0.05)

    def flush(self) -> None:
        """Only this bench's own server: its port is a free one, never the shared 6379."""
        assert self.port != 6379
        self.client.flushdb()


def ensure_postgres(url: str) -> None:
    """Create the database of `url` when missing (from the server's `postgres` database), then migrate it."""
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{parsed.database}"')
    migrate(url)


def app_tables() -> list[str]:
    """The service's tables, read from its models at run time (they may change while the bench is used)."""
    from store.models import Base

    return [table.name for table in Base.metadata.sorted_tables]


def libpq_url(url: str) -> str:
    """`postgresql+psycopg://` → `postgresql://`, which psycopg.connect takes."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def reset_postgres(url: str) -> None:
    """Empty the service's tables in the bench's database (only there: the URL is the bench's)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(f"TRUNCATE {', '.join(app_tables())} RESTART IDENTITY CASCADE")


class SqliteTemplate:
    """A migrated SQLite file copied for each run: a fresh database without paying for migrations each time."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.template = directory / "template.db"
        migrate(f"sqlite:///{self.template}")
        self._count = 0

    def fresh(self) -> str:
        self._count += 1
        path = self.directory / f"run{self._count}.db"
        shutil.copyfile(self.template, path)
        return f"sqlite:///{path}"


def service_env(redis_url: str, database_url: str, metrics_dir: Path, **extra: str) -> dict[str, str]:
    """The environment the service's processes get: the bench's Redis, database and secret; Verisoul and
    Persona's API off (set empty so a `.env` cannot turn them on); a tolerance the bench's signatures meet."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PERSONA_WEBHOOK_SECRETS": SECRET,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "PERSONA_SIGNATURE_TOLERANCE": str(SIGNATURE_TOLERANCE),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "VERISOUL_API_URL": "",
        "PERSONA_API_KEY": "",
        **extra,
    }


def web_command(app: str | None = None) -> list[str]:
    """The Procfile's `web:` command; with `app`, the same command serving another app factory (the ceiling)."""
    command = procfile_command("web")
    if app is not None:
        command[-1] = app  # gunicorn --config gunicorn.conf.py <app>
    return command


def worker_command() -> list[str]:
    return [*procfile_command("worker"), "--burst"]


class Web:
    """A gunicorn started with the Procfile's command (or the ceiling app) on a free port."""

    def __init__(self, children: Children, name: str, env: dict[str, str], app: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.children, self.name = children, name
        env = {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        # SIGINT: gunicorn's quick shutdown (SIGTERM would wait for kept-alive connections to go idle).
        self.process = children.start(name, web_command(app), env, stop_signal=signal.SIGINT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise SystemExit(f"bench: {self.name} did not become ready; see {self.children.log_dir / (self.name + '.log')}")

    def stop(self) -> None:
        self.children.stop(self.process)


@dataclass
class Context:
    """What every section of the bench shares: options, the directory, the children, Redis, databases, the table."""

    directory: Path
    children: Children
    redis: BenchRedis
    postgres_url: str
    sqlite: SqliteTemplate
    quick: bool
    reps: int
    table: Table
    steady_seconds: float = 30.0

    def env(self, database_url: str, **extra: str) -> dict[str, str]:
        return service_env(self.redis.url, database_url, self.directory / "metrics", **extra)

    def fresh_database(self, kind: str) -> str:
        """An empty migrated database: a new SQLite file, or the bench's PostgreSQL database emptied."""
        if kind == "sqlite":
            return self.sqlite.fresh()
        reset_postgres(self.postgres_url)
        return self.postgres_url


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:  # the field after the state is the parent's pid
            found.append(int(stat.parent.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used so far, from /proc; a process gone counts nothing."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def progress(message: str) -> None:
    """Progress on stderr; stdout carries only the header, the table and its notes."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
