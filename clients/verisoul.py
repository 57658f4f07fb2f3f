"""Verisoul clients: one interface, two API generations (docs/verisoul.md), selected by VERISOUL_API_FLAVOR.

Transient failures (connection errors, 408, 429, 5xx) are retried here, with exponential backoff and
jitter, and not again by RQ: stacking both would multiply the calls. Other 4xx answers are final and
raise VerisoulError with Verisoul's message. Every request first takes a slot from a rate limiter
shared by all workers, to stay under Verisoul's 300 requests a minute.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import requests

from clients.urls import SendsUrlsAsBuilt, segment
from runtime.metrics import count_verisoul_call

# (connect, read) seconds: a slow Verisoul must not hold a worker for long; a sync of 4 calls, each tried
# twice, stays inside the sync job's 45 s time limit (store/sync_queue.py SYNC_TIMEOUT).
TIMEOUTS = (3.05, 4)
# Two attempts (the second after 0.5-0.75 s) ride out a blip; a longer outage is the job's to retry, on
# RQ's schedule, without holding a worker that could be applying events (store/sync_queue.py SYNC_RETRY).
ATTEMPTS = 2
BACKOFF_BASE = 0.5
RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


class VerisoulError(Exception):
    """Verisoul refused the request (a 4xx other than 408/429); not worth retrying."""

    def __init__(self, status: int, message: str):
        super().__init__(f"Verisoul answered {status}: {message}")
        self.status = status


class VerisoulUnavailable(Exception):
    """Verisoul did not answer usefully after every retry."""


@dataclass(frozen=True)
class Account:
    enrolled: bool
    blocked: bool
    linked_accounts: int


class VerisoulClient(Protocol):
    def get_account(self, account_id: str) -> Account: ...
    def enroll(self, account_id: str, inquiry_id: str | None) -> dict: ...
    def block(self, account_id: str) -> dict: ...
    def unblock(self, account_id: str) -> dict: ...


class _Session(SendsUrlsAsBuilt, requests.Session):
    """A session that sends `_path()`'s encoding as it is (see clients.urls)."""


class Transport:
    """JSON over one requests.Session with the API key, timeouts, retries and the shared rate limit."""

    def __init__(self, base_url: str, api_key: str, acquire: Callable[[], None] = lambda: None, sleep=time.sleep):
        self.base_url = base_url.rstrip("/")
        self.session = _Session()
        self.session.headers.update({"x-api-key": api_key, "Accept": "application/json"})
        self.acquire = acquire
        self.sleep = sleep

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        problem = "no attempt made"
        for attempt in range(ATTEMPTS):
            if attempt:
                self.sleep(BACKOFF_BASE * 2 ** (attempt - 1) * (1 + random.random() / 2))
            self.acquire()
            try:
                response = self.session.request(method, self.base_url + path, json=body, timeout=TIMEOUTS)
            except requests.RequestException as error:
                count_verisoul_call(method, None)
                problem = type(error).__name__
                continue
            count_verisoul_call(method, response.status_code)
            if response.status_code in RETRY_STATUSES:
                problem = f"HTTP {response.status_code}"
                continue
            return _answer(response)
        raise VerisoulUnavailable(f"{method} {path}: {problem} after {ATTEMPTS} attempts")


def _answer(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        message = body.get("message") if isinstance(body, dict) else None
        raise VerisoulError(response.status_code, str(message or response.reason))
    return body if isinstance(body, dict) else {"body": body}


def _path(account_id: str) -> str:
    """The account id as one path segment: no id can reach another route, a query or a dot segment."""
    return segment(account_id)


class AccountApi:
    """The enroll-and-block account API (api.*.verisoul.xyz)."""

    def __init__(self, transport: Transport):
        self.transport = transport

    def get_account(self, account_id: str) -> Account:
        body = self.transport.call("GET", f"/account/{_path(account_id)}")
        return Account(bool(body.get("isEnrolled")), bool(body.get("isBlocked")), int(body.get("numAccounts") or 0))

    def enroll(self, account_id: str, inquiry_id: str | None) -> dict:
        return self.transport.call("POST", f"/account/{_path(account_id)}/enroll", {"externalId": account_id})

    def block(self, account_id: str) -> dict:
        return self.transport.call("POST", f"/block/{_path(account_id)}")

    def unblock(self, account_id: str) -> dict:
        return self.transport.call("POST", f"/unblock/{_path(account_id)}")


def _names_block_list(entry) -> bool:
    """A `lists` entry is the list's name, or an object carrying it."""
    name = entry.get("name") if isinstance(entry, dict) else entry
    return isinstance(name, str) and name.lower() == "block"


class ListsApi:
    """The current platform's lists API (api.*.verisoul.ai); "enrolled" is recorded in account metadata."""

    def __init__(self, transport: Transport):
        self.transport = transport

    def get_account(self, account_id: str) -> Account:
        body = self.transport.call("GET", f"/account/{_path(account_id)}")
        account = body.get("account") or {}
        lists = body.get("lists") or []
        return Account(
            enrolled=bool((account.get("metadata") or {}).get("persona_verified")),
            blocked=any(_names_block_list(entry) for entry in lists),
            linked_accounts=int(body.get("accounts_linked") or 0),
        )

    def enroll(self, account_id: str, inquiry_id: str | None) -> dict:
        metadata = {"persona_verified": True, "persona_inquiry_id": inquiry_id}
        return self.transport.call("PUT", f"/account/{_path(account_id)}", {"id": account_id, "metadata": metadata})

    def block(self, account_id: str) -> dict:
        return self.transport.call("POST", f"/list/block/account/{_path(account_id)}")

    def unblock(self, account_id: str) -> dict:
        return self.transport.call("DELETE", f"/list/block/account/{_path(account_id)}")

    def delete_account(self, account_id: str) -> bool:
        """`DELETE /account/{account_id}` (docs/verisoul.md): the account and its data. True when deleted now,
        False when Verisoul has no such account (404, or its usual 400 "Account not found")."""
        try:
            self.transport.call("DELETE", f"/account/{_path(account_id)}")
        except VerisoulError as error:
            if error.status == 404 or (error.status == 400 and "not found" in str(error).lower()):
                return False
            raise
        return True


def account_deleter(client: VerisoulClient) -> Callable[[str], bool] | None:
    """The client's account delete, or None: the account generation has no delete (docs/verisoul.md)."""
    return getattr(client, "delete_account", None)


FLAVORS: dict[str, Callable[[Transport], VerisoulClient]] = {"account": AccountApi, "lists": ListsApi}


def make_client(url: str, api_key: str, flavor: str, acquire: Callable[[], None]) -> VerisoulClient:
    return FLAVORS[flavor](Transport(url, api_key, acquire))
