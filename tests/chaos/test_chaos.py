"""The fault suite (scripts/chaos.py), CI-sized: two short faults with a smaller stream, through the same code as
`python -m scripts.chaos`, held to the same targets: every acknowledged event applied once, every record and
Verisoul matching the model, no double enroll, convergence within 90 s of the fault's end.

PostgreSQL (a database of its own, created and dropped on the server of TEST_DATABASE_URL, behind the suite's
TCP proxy) when TEST_DATABASE_URL is set, else SQLite. Each process's log stays in the test's tmp_path.
"""

from __future__ import annotations

import os

import pytest

from scripts.chaos import FAULTS, TARGET_SECONDS, Settings, details, run_scenario, table

pytestmark = pytest.mark.chaos

USERS = 40
RATE = 40.0  # posts per second: a stream of about 15 s
CI_FAULTS = ["worker-sigkill", "redis-sigkill"]


@pytest.mark.parametrize("fault", CI_FAULTS)
def test_every_acknowledged_event_becomes_the_expected_record_after(fault, tmp_path):
    assert fault in FAULTS
    database_url = os.environ.get("TEST_DATABASE_URL")
    settings = Settings(
        faults=[fault],
        users=USERS,
        database="postgresql" if database_url else "sqlite",
        postgres_url=database_url or "",
        rate=RATE,
        cap=TARGET_SECONDS,  # beyond the target the row fails anyway
        give_up=120.0,
        keep_logs=tmp_path,
    )
    row = run_scenario(fault, settings, CI_FAULTS.index(fault) + 1, tmp_path / fault)
    report = f"\n{table([row])}\n{details([row])}"
    print(report)
    assert row.error is None, report
    assert row.acknowledged == row.events, report
    assert (row.not_acknowledged, row.lost, row.applied_twice) == (0, 0, 0), report
    assert (row.wrong_records, row.double_enrolls) == (0, 0), report
    assert row.converge_seconds is not None and row.converge_seconds <= TARGET_SECONDS, report
    assert row.ok, report
