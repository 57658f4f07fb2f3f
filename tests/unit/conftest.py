"""Fixtures shared by the unit tests: Verisoul clients on the fake Verisoul, their slots and sleeps recorded."""

from __future__ import annotations

import pytest
import requests

from clients.verisoul import FLAVORS, Transport
from scripts.fake_verisoul import DEFAULT_API_KEY
from tests.servers import FLAVOR_PREFIX, FakeVerisoulControl


@pytest.fixture
def fake_verisoul(fake_verisoul_url) -> FakeVerisoulControl:
    """The module's fake Verisoul, reset."""
    requests.post(f"{fake_verisoul_url}/_control/reset").raise_for_status()
    return FakeVerisoulControl(fake_verisoul_url)


class Recorder:
    """An acquire() and a sleep() that record what the transport asked for, in order, without waiting."""

    def __init__(self):
        self.events: list[tuple] = []

    def acquire(self) -> None:
        self.events.append(("acquire",))

    def sleep(self, seconds: float) -> None:
        self.events.append(("sleep", seconds))

    @property
    def acquires(self) -> int:
        return sum(1 for event in self.events if event[0] == "acquire")

    @property
    def sleeps(self) -> list[float]:
        return [event[1] for event in self.events if event[0] == "sleep"]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def verisoul_client_for(fake_verisoul, recorder):
    """make(flavor): a Verisoul client on the fake (or `base_url`), its slots and sleeps in `recorder`."""
    sessions = []

    def make(flavor: str, base_url: str | None = None, api_key: str = DEFAULT_API_KEY):
        url = (base_url or fake_verisoul.url) + FLAVOR_PREFIX[flavor]
        transport = Transport(url, api_key, acquire=recorder.acquire, sleep=recorder.sleep)
        sessions.append(transport.session)
        return FLAVORS[flavor](transport)

    yield make
    for session in sessions:
        session.close()
