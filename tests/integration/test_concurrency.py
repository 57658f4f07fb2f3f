"""Four worker processes on one user's events at once lose no update (real Redis, SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select

from scripts.devstack import procfile_command
from store.db import Database
from store.models import Event, History, Inquiry, User
from store.queue import EventQueue

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USERS = 4
INQUIRIES_PER_USER = 15
LIFECYCLE = ("created", "pending", "completed", "declined")


def _event(n: int, user: int, inquiry: int, step: int, status: str, with_reference: bool) -> dict:
    return {
        "event_id": f"evt_c{n:06d}",
        "name": f"inquiry.{status}",
        "created_at": f"2026-01-01T00:{inquiry:02d}:{step:02d}.000Z",
        "received_at": "2026-01-01T01:00:00.000Z",
        "body_sha256": "0" * 64,
        "object_type": "inquiry",
        "object_id": f"inq_u{user}_{inquiry}",
        "status": status,
        # Some events carry only the Persona account: the record must merge into the reference id.
        "reference_id": f"user_{user}" if with_reference else None,
        "account_id": f"act_{user}",
        "template_id": "itmpl_1",
        "timestamps": {"created_at": f"2026-01-01T00:{inquiry:02d}:00.000Z"},
    }


def _events(rng: random.Random) -> list[dict]:
    events, n = [], 0
    for user in range(USERS):
        for inquiry in range(INQUIRIES_PER_USER):
            for step, status in enumerate(LIFECYCLE):
                events.append(_event(n, user, inquiry, step, status, with_reference=rng.random() < 0.7))
                n += 1
    rng.shuffle(events)
    return events


def _run_workers(count: int, env: dict, log_dir: Path) -> None:
    """The Procfile's worker with --burst, `count` of them at once; each exits when the queue is empty."""
    command = [*procfile_command("worker"), "--burst"]
    logs = [open(log_dir / f"worker-{n}.log", "wb") for n in range(count)]
    workers = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log) for log in logs]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, f"a worker failed; logs in {log_dir}"


def test_four_workers_lose_no_update(real_config, real_redis, worker_env, tmp_path):
    events = _events(random.Random(7))
    queue = EventQueue(real_redis, real_config)
    assert all(queue.enqueue_once(event) for event in events)
    _run_workers(4, {**os.environ, **worker_env}, tmp_path)

    assert FailedJobRegistry(real_config.events_queue, connection=real_redis).count == 0
    with Database(real_config.database_url).sessions() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == len(events)
        assert session.scalar(select(func.count()).select_from(History)) == len(events)
        users = {u.reference_id: u for u in session.scalars(select(User))}
        assert sorted(users) == sorted(f"user_{n}" for n in range(USERS))
        for key, user in users.items():
            assert user.persona_account_id == f"act_{key.split('_')[1]}"
            inquiries = session.scalars(select(Inquiry).where(Inquiry.user_id == user.id)).all()
            assert len(inquiries) == INQUIRIES_PER_USER
            assert {i.status for i in inquiries} == {"declined"}
            owned = session.scalar(select(func.count()).select_from(History).where(History.user_id == user.id))
            assert owned == INQUIRIES_PER_USER * len(LIFECYCLE)
