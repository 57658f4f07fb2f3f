"""Erasure on a person's request (docs/contracts.md §10), and the event log's retention. Pure: no I/O.

An erasure forgets a user everywhere the service keeps them: Persona redacts their inquiries, Verisoul deletes
their account, every row about them is deleted, and so is every Redis key and RQ job that names them. What is
kept is a receipt naming nobody (the reference id as its SHA-256) and the SHA-256 of every erased id, so that an
event naming one later is dropped (outcome `erased`) instead of re-creating the user.

The steps run in this order, each recorded once done, so a job that dies part-way resumes at the first step not
recorded and a second run does nothing more:

1. `persona`: redact each inquiry at Persona (a 404 means already gone);
2. `rows`: delete the user's rows in one transaction, the receipt's counts written in it;
3. `redis`: delete the keys and RQ jobs that name the user or its inquiries;
4. `verisoul`: delete the account at Verisoul.

Verisoul comes last, after the rows and the queued syncs are gone: a sync queued before the erasure and run
after the delete would otherwise write the account back (the lists API creates an account on a metadata write).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from marshmallow import RAISE, Schema, ValidationError, fields

from domain.overrides import MAX_REASON_LENGTH, audit_text

ERASED = "erased"  # the outcome of an event that names an erased id: dropped, nothing written

PENDING, DONE, FAILED = "pending", "done", "failed"
PERSONA, ROWS, REDIS, VERISOUL = "persona", "rows", "redis", "verisoul"
STEPS = (PERSONA, ROWS, REDIS, VERISOUL)
STEP_DONE, STEP_SKIPPED = "done", "skipped"

# The inquiry statuses whose events the retention may delete: Persona's decisions. `completed` is not one (a
# workflow may still decide), needs_review waits for a reviewer, created and pending are open and expired can be
# resumed: those inquiries may still move, and a replay may yet need their events. A reviewer may reverse a
# decision later, but that arrives as a new event, judged against the inquiry's row, not against the log.
FINAL_STATUSES = ("approved", "declined", "failed")


def sha256_of(identifier: str) -> str:
    """The digest an erased id is remembered by (hex), over its UTF-8 bytes."""
    return hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ErasureRequest:
    """An operator's request to erase a user, validated: why and who."""

    reason: str
    operator: str


class ErasureRequestSchema(Schema):
    """`{"reason", "operator"}`; unknown fields are refused, like an override's."""

    class Meta:
        unknown = RAISE

    reason = fields.String(required=True, validate=audit_text(MAX_REASON_LENGTH))
    operator = fields.String(required=True, validate=audit_text())


def load_erasure_request(document: object) -> ErasureRequest:
    """A request body (or the CLI's options) as an ErasureRequest; raises ValidationError naming the field."""
    if not isinstance(document, dict):
        raise ValidationError("expected a JSON object with reason and operator")
    return ErasureRequest(**ErasureRequestSchema().load(document))


def steps_left(recorded: list[dict]) -> list[str]:
    """The steps not recorded yet (done or skipped), in order."""
    finished = {step["step"] for step in recorded if step.get("status") in (STEP_DONE, STEP_SKIPPED)}
    return [step for step in STEPS if step not in finished]


def names_any(value: object, names: frozenset[str]) -> bool:
    """Whether `value` (a job's arguments: strings, lists, tuples and dicts, nested) holds one of `names` as a
    string, a dict key included."""
    if isinstance(value, str):
        return value in names
    if isinstance(value, dict):
        return any(names_any(key, names) or names_any(item, names) for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(names_any(item, names) for item in value)
    return False


def retention_cutoff(now: datetime, days: int) -> datetime:
    """Events that happened before this moment are past the retention."""
    return now - timedelta(days=days)


def user_key(reference_id: str | None, account_reference_id: str | None, account_id: str | None) -> str | None:
    """The id that decides whose record an event changes (docs/contracts.md §4): its reference id, else its Persona
    account's, else the account itself. An event is dropped for an erased user by this key alone, never for an id it
    merely mentions: the reference id of the account it includes may be another person's (found by a trial, where
    erasing one user dropped every later event of others sharing the sample's account)."""
    return reference_id or account_reference_id or account_id


def digests(identifiers: Iterable[str | None]) -> list[str]:
    """The SHA-256 of each id given (None and empty ones skipped), sorted and without repeats."""
    return sorted({sha256_of(identifier) for identifier in identifiers if identifier})
