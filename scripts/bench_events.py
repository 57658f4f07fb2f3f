"""Webhook bodies and queued events for scripts/bench.py, all built from the captured fixtures.

- `Template`: a fixture with some fields (event id, name, time, object id, status, reference id, ...)
  turned into slots, rendered byte for byte in the fixture's own layout (the 65 KB sandbox capture stays
  65 KB). The load generators fill the slots per request, so every request is a distinct event.
- `SignedEvents`: rows of slot values, each with its Persona-Signature header computed once (the
  `t=<unix>,v1=<hmac>` scheme of domain/signature.py), for wrk and the paced sender.
- `queued_event`: what the webhook queues for a body, through the app's own public functions
  (JSON, `normalise_keys`, `load_envelope`, `minimise`, plus `received_at`), so the worker benchmarks
  get exactly the format the current code produces.
- Streams: `lifecycle_stream` (users x inquiries x created/pending/completed/approved, shuffled) and
  `long_inquiry_stream` (N events per inquiry, inquiry and verification events alternating, in order).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from domain.events import QueuedEvent, body_sha256, minimise, normalise_keys
from domain.schemas import load_envelope
from domain.signature import sign
from domain.times import iso_millis

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
INQUIRY_7KB = "docs_inquiry_completed.json"  # 6.9 KB: the fixture nearest 7 KB
INQUIRY_65KB = "sandbox_inquiry_approved.json"  # 65 KB: the captured sandbox delivery
VERIFICATION = "docs_verification_passed.json"

_EVENT = {"evt": ("data", "id"), "name": ("data", "attributes", "name"), "at": ("data", "attributes", "created-at")}
_OBJECT = ("data", "attributes", "payload", "data")
INQUIRY_SLOTS = {
    **_EVENT,
    "inq": (*_OBJECT, "id"),
    "status": (*_OBJECT, "attributes", "status"),
    "ref": (*_OBJECT, "attributes", "reference-id"),
    "act": (*_OBJECT, "relationships", "account", "data", "id"),
}
VERIFICATION_SLOTS = {
    **_EVENT,
    "ver": (*_OBJECT, "id"),
    "status": (*_OBJECT, "attributes", "status"),
    "inq": (*_OBJECT, "relationships", "inquiry", "data", "id"),
}
# Ids are replaced wherever the fixture repeats them (the inquiry id in its session, the account id in
# `included`), so a rendered event is as consistent as the capture; statuses and names only at their path.
_IDS = frozenset({"evt", "inq", "ver", "act"})
_MARKER = re.compile(r"@@(\w+)@@")
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:-]+")  # inserted into JSON strings as they are: nothing to escape
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def _indent_of(raw: str, document: dict) -> int:
    """The fixture's own indentation, so a rendered body is the size Persona sent."""
    for indent in (4, 2):
        if json.dumps(document, indent=indent) == raw.strip():
            return indent
    return 2


def _put(document: dict, path: tuple[str, ...], value: str) -> str:
    node = document
    for key in path[:-1]:
        node = node[key]
    original, node[path[-1]] = node[path[-1]], value
    return original


def _replace_everywhere(node, original: str, value: str):
    if isinstance(node, dict):
        return {key: _replace_everywhere(item, original, value) for key, item in node.items()}
    if isinstance(node, list):
        return [_replace_everywhere(item, original, value) for item in node]
    return value if node == original else node


class Template:
    """A fixture with slots; `render(values)` gives the body bytes."""

    def __init__(self, fixture: str, slots: dict[str, tuple[str, ...]]):
        raw = (FIXTURES / fixture).read_text()
        document = json.loads(raw)
        indent = _indent_of(raw, document)
        self.fixture = fixture
        self.defaults = {}
        for slot, path in slots.items():
            self.defaults[slot] = _put(document, path, f"@@{slot}@@")
            if slot in _IDS:
                document = _replace_everywhere(document, self.defaults[slot], f"@@{slot}@@")
        pieces = _MARKER.split(json.dumps(document, indent=indent))
        self.parts = [piece.encode() for piece in pieces[0::2]]
        self.gaps = pieces[1::2]  # the slot of each gap between parts

    def render(self, values: dict[str, str]) -> bytes:
        out = [self.parts[0]]
        for gap, part in zip(self.gaps, self.parts[1:], strict=True):
            out.append(values[gap].encode())
            out.append(part)
        return b"".join(out)

    def size(self) -> int:
        return len(self.render({slot: str(value) for slot, value in self.defaults.items()}))


@dataclass
class SignedEvents:
    """Slot values per request, each with its signature header, signed at `timestamp`."""

    template: Template
    rows: list[dict[str, str]]
    headers: list[str]

    @classmethod
    def build(cls, template: Template, rows: list[dict[str, str]], secret: str, timestamp: int | None = None):
        timestamp = int(time.time()) if timestamp is None else timestamp
        for row in rows[:1]:
            assert all(_SAFE_VALUE.fullmatch(row[gap]) for gap in template.gaps), row
        headers = [sign(secret, timestamp, template.render(row)) for row in rows]
        return cls(template, rows, headers)

    def __len__(self) -> int:
        return len(self.rows)

    def request(self, index: int) -> tuple[bytes, dict[str, str]]:
        body = self.template.render(self.rows[index])
        return body, {"Content-Type": "application/json", "Persona-Signature": self.headers[index]}

    def event_id(self, index: int) -> str:
        return self.rows[index]["evt"]

    def write_wrk_data(self, path: Path) -> None:
        """The format scripts/bench_load.py's Lua script reads: a count line, the literal parts
        (each as its byte length, a newline and the bytes), then one line per request: the signature
        header and the value of each gap, tab-separated."""
        with open(path, "wb") as out:
            out.write(f"{len(self.template.parts)} {len(self.rows)}\n".encode())
            for part in self.template.parts:
                out.write(f"{len(part)}\n".encode() + part)
            for row, header in zip(self.rows, self.headers, strict=True):
                out.write("\t".join([header, *(row[gap] for gap in self.template.gaps)]).encode() + b"\n")


def at(offset_ms: int) -> str:
    return iso_millis(BASE_TIME + timedelta(milliseconds=offset_ms))


def distinct_rows(template: Template, count: int, tag: str, users: int = 1000) -> list[dict[str, str]]:
    """`count` distinct events, each a new event id and a new inquiry, otherwise the fixture's event."""
    defaults = {slot: str(value) for slot, value in template.defaults.items()}
    return [
        {
            **defaults,
            "evt": f"evt_{tag}{i:08d}",
            "inq": f"inq_{tag}{i:08d}",
            "ref": f"bench_user_{tag}{i % users}",
            "act": f"act_{tag}{i % users}",
        }  # fmt: skip
        for i in range(count)
    ]


LIFECYCLE = ("created", "pending", "completed", "approved")


def lifecycle_rows(tag: str, inquiries: int, users: int, block: int = 50) -> list[dict[str, str]]:
    """Inquiries going through created, pending, completed, approved, in time order, as Persona would
    send them: a block of `block` inquiries at a time, step by step, so two events of one inquiry are
    `block` events apart (close enough that two workers sometimes meet on one inquiry's lock)."""
    rows = []
    for first in range(0, inquiries, block):
        for step, status in enumerate(LIFECYCLE):
            for k in range(first, min(first + block, inquiries)):
                rows.append({
                    "evt": f"evt_{tag}{k:07d}s{step}", "name": f"inquiry.{status}", "status": status,
                    "at": at(k * 10_000 + step * 1000), "inq": f"inq_{tag}{k:07d}",
                    "ref": f"bench_user_{tag}{k % users}", "act": f"act_{tag}{k % users}",
                })  # fmt: skip
    return rows


def queued_event(body: bytes) -> QueuedEvent:
    """What POST /webhooks/persona queues for `body` (after its signature check), via the app's functions."""
    envelope = load_envelope(normalise_keys(json.loads(body.decode("utf-8-sig"))))
    event = minimise(envelope, body_sha256(body))
    event["received_at"] = iso_millis(datetime.now(UTC))
    return event


def queued_events(template: Template, rows: Iterable[dict[str, str]]) -> list[QueuedEvent]:
    return [queued_event(template.render(row)) for row in rows]


def lifecycle_stream(tag: str, users: int, inquiries_per_user: int, seed: int = 1) -> list[QueuedEvent]:
    """users x inquiries x (created, pending, completed, approved), shuffled: arrival order is not
    event order, so some events are stale, as in production. ~7 KB bodies."""
    template = Template(INQUIRY_7KB, INQUIRY_SLOTS)
    rows = []
    for user in range(users):
        for n in range(inquiries_per_user):
            for step, status in enumerate(LIFECYCLE):
                rows.append({
                    "evt": f"evt_{tag}{user:05d}i{n}s{step}", "name": f"inquiry.{status}", "status": status,
                    "at": at((n * 3600 + step) * 1000), "inq": f"inq_{tag}{user:05d}i{n}",
                    "ref": f"bench_user_{tag}{user}", "act": f"act_{tag}{user}",
                })  # fmt: skip
    random.Random(seed).shuffle(rows)
    return queued_events(template, rows)


INQUIRY_CYCLE = ("created", "pending", "completed", "approved")
VERIFICATION_CYCLE = ("initiated", "submitted", "passed")


def long_inquiry_stream(tag: str, inquiries: int, per_inquiry: int) -> list[QueuedEvent]:
    """`per_inquiry` events for each inquiry (one user each), alternating an inquiry event (status cycling
    created, pending, completed, approved) and an event of the inquiry's verification (initiated,
    submitted, passed), each 1 s after the last: every one newer, so every one is applied. Inquiries are
    interleaved round-robin. The same mix whatever `per_inquiry`, so only the inquiry's length differs."""
    inquiry = Template(INQUIRY_7KB, INQUIRY_SLOTS)
    verification = Template(VERIFICATION, VERIFICATION_SLOTS)
    events = []
    for n in range(per_inquiry):
        for k in range(inquiries):
            common = {"evt": f"evt_{tag}{k:05d}n{n:05d}", "at": at(k * 10**7 + n * 1000), "inq": f"inq_{tag}{k:05d}"}
            if n % 2 == 0:
                status = INQUIRY_CYCLE[(n // 2) % len(INQUIRY_CYCLE)]
                user = {"ref": f"bench_user_{tag}{k}", "act": f"act_{tag}{k}"}
                row = {**common, **user, "name": f"inquiry.{status}", "status": status}
                events.append(queued_event(inquiry.render(row)))
            else:
                status = VERIFICATION_CYCLE[(n // 2) % len(VERIFICATION_CYCLE)]
                row = {**common, "name": f"verification.{status}", "status": status, "ver": f"ver_{tag}{k:05d}"}
                events.append(queued_event(verification.render(row)))
    return events
