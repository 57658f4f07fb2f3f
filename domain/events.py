"""Event normalisation and minimisation. Pure: dicts in, dicts out.

Persona lets each webhook choose kebab (`reference-id`), snake (`reference_id`) or camel
(`referenceId`) keys. Keys are normalised to snake case once, as soon as the body is parsed: every key
(`normalise_keys`), or, in the webhook, only the keys of the parts that are read (`normalise_envelope`),
since re-casing a large body's personal data costs more than validating it; values (event names,
statuses, ids) are never re-cased.

Minimisation keeps what the service acts on (ids, statuses, timestamps, check results) and drops
everything else, so personal data never reaches Redis, the worker or the database: the payload is
rebuilt from an allowlist, never filtered by a denylist, because Persona adds attributes over time.

Each value is checked as it is kept, with the rules the worker and the database need (`text_problem`,
`parse_rfc3339`), and only what is kept: a field the service drops (personal data) is never a reason
to refuse an authentic event. A kept value that breaks a rule raises `InvalidEvent` naming the field,
which the webhook answers 400; so whatever is queued, the worker can apply. Values of another JSON type
than the one kept (a numeric reference id) are dropped, as they always were.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, NotRequired, TypedDict

from domain.times import iso_millis, parse_rfc3339

# Inquiry and verification timestamps the state machine and the user record use.
LIFECYCLE_TIMESTAMPS = (
    "created_at",
    "started_at",
    "submitted_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "decisioned_at",
    "marked_for_review_at",
    "redacted_at",
    "updated_at",
)
QUEUED_PREFIXES = ("inquiry.", "verification.")
# Events about other objects that the worker acts on: Persona redacted an account, so all its inquiries
# (docs/contracts.md §10: the gate never resumes a redacted inquiry).
ACCOUNT_REDACTED = "account.redacted"
QUEUED_NAMES = frozenset({ACCOUNT_REDACTED})

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# --- the rules for kept values ------------------------------------------------------------------------

# Every id and name column the worker writes is VARCHAR(255) (store/models.py); PostgreSQL refuses longer.
MAX_TEXT_LENGTH = 255
# Unicode categories refused in kept strings: Cc (controls: NUL, which PostgreSQL text cannot hold, and
# newlines, escapes, DEL, C1) and Cs (lone surrogates, which UTF-8, Redis and PostgreSQL cannot hold).
# Cf, Co and Cn are stored fine everywhere and occur in hosts' ids (emoji ZWJ sequences are Cf, emoji
# newer than this Python are Cn), so refusing them would lose authentic events for nothing.
REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})
# The same two categories as one character class, searched in C instead of a Python loop per character.
# Unicode keeps both fixed (Cc is closed, Cs is the surrogate block); tests/unit/test_events.py checks it
# against unicodedata for every code point.
_REFUSED_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class Check(TypedDict):
    name: str
    status: str  # Persona's check status (`passed`, `failed`, ...), `unknown` when it gave none


class QueuedEvent(TypedDict):
    """An event as queued, logged and applied (`minimise`): no personal data, JSON-safe.

    Ids, names and statuses are 1-255 characters (`text_problem`); times are `iso_millis` strings."""

    event_id: str  # Persona's event id (`evt_...`): the dedupe key from the webhook to the events table
    name: str  # `inquiry.approved`, `verification.passed`, ...
    created_at: str  # when Persona created the event
    body_sha256: str  # hex digest of the raw body as received (or as fetched)
    object_type: str  # `inquiry`, `verification/government-id`, ...
    object_id: str
    status: str | None  # the object's status in this snapshot
    reference_id: str | None  # the host's user id, when the inquiry carries one
    account_id: str | None  # Persona's account (`act_...`)
    account_reference_id: str | None  # the account's reference id, from the payload's `included`
    template_id: str | None
    inquiry_id: str | None  # a verification's inquiry
    verification_type: str | None  # `government-id`, `selfie`, ... (verifications only)
    checks: list[Check]
    timestamps: dict[str, str]  # the object's lifecycle times that Persona gave (`completed_at`, ...)
    received_at: NotRequired[str]  # set at the edge: when the webhook arrived, or when the event was fetched


class InvalidEvent(ValueError):
    """A kept value the worker or the database cannot take; `field` is its dotted path in the envelope."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def text_problem(value: str, max_length: int = MAX_TEXT_LENGTH) -> str | None:
    """Why `value` cannot be kept as an id, name or status (None when it can): the one rule for kept text."""
    if not 1 <= len(value) <= max_length:
        return f"must be 1 to {max_length} characters long"
    refused = _REFUSED_CHARACTER.search(value)
    if refused:
        return f"must not contain control characters or lone surrogates (U+{ord(refused.group()):04X})"
    return None


def snake_key(key: str) -> str:
    """`reference-id`, `referenceId` and `reference_id` all become `reference_id`."""
    return _CAMEL_BOUNDARY.sub("_", key).replace("-", "_").lower()


def normalise_keys(value: Any) -> Any:
    """Recursively snake-case every dict key; values are left as they are."""
    if isinstance(value, dict):
        return {snake_key(k) if isinstance(k, str) else k: normalise_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise_keys(v) for v in value]
    return value


# The relationships of the event's object that `minimise` reads (`_related_id`).
RELATIONSHIPS_READ = ("account", "inquiry_template", "template", "inquiry")
# The dicts of an envelope that validation (domain/schemas.py) and `minimise` read, whose own keys are
# re-cased, as nested shapes: a dict shape names the children to descend into, `[shape]` is every item of
# a list. Everything else (personal data, the contents of attributes and checks, other relationships)
# keeps its keys as sent.
_READ_SHAPE = {
    "data": {  # the event
        "attributes": {
            "payload": {
                "data": {  # the object the event is about
                    "attributes": {"checks": [{}]},
                    "relationships": {name: {"data": {}} for name in RELATIONSHIPS_READ},
                },
                "included": [{"attributes": {}}],
            },
        },
    },
}


def normalise_envelope(document: Any) -> Any:
    """`normalise_keys` for the parts of an envelope that are read: validating and minimising the result
    gives what they give for the fully normalised document, for a fraction of the work on a large body."""
    return _normalise_shape(document, _READ_SHAPE)


def _normalise_shape(value: Any, shape: dict | list) -> Any:
    if isinstance(shape, list):
        return [_normalise_shape(item, shape[0]) for item in value] if isinstance(value, list) else value
    if not isinstance(value, dict):
        return value
    # A comprehension like normalise_keys': when two keys re-case alike (`reference-id`, `referenceId`),
    # the later one wins, as it does there.
    normalised = {snake_key(k) if isinstance(k, str) else k: v for k, v in value.items()}
    for key, child_shape in shape.items():
        if key in normalised:
            normalised[key] = _normalise_shape(normalised[key], child_shape)
    return normalised


def is_queued_name(name: str) -> bool:
    """`inquiry.*` and `verification.*`, including names Persona adds later, and `account.redacted`."""
    return name.startswith(QUEUED_PREFIXES) or name in QUEUED_NAMES


def is_redaction(event: QueuedEvent) -> bool:
    """Persona redacted the event's object: told by `redacted-at`, never by the status (docs/persona.md), or by
    the event's name when the timestamp was not sent."""
    return event["name"].endswith(".redacted") or "redacted_at" in event.get("timestamps", {})


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _kept(value: Any, field: str) -> str | None:
    """A kept string checked against `text_problem`; None for absent, empty or non-string values,
    which are dropped as before (the worker treats them as missing)."""
    if not isinstance(value, str) or not value:
        return None
    problem = text_problem(value)
    if problem:
        raise InvalidEvent(field, problem)
    return value


def _reference(value: Any, field: str) -> str | None:
    """`_kept` for a reference id, which decides whose record an event changes: absent (null or empty) is None, but
    any other non-string is refused, not dropped as missing, which would give the event to another id (the
    account's)."""
    if value is not None and value != "" and not isinstance(value, str):
        raise InvalidEvent(field, f"must be a string, got {type(value).__name__}")
    return _kept(value, field)


def _required(value: Any, field: str) -> str:
    """`_kept` for a value the envelope schema has already required to be a non-empty string."""
    kept = _kept(value, field)
    if kept is None:
        raise InvalidEvent(field, "must be a non-empty string")
    return kept


def _related_id(obj: dict, path: str, *names: str) -> str | None:
    """The id of the first named relationship present, e.g. `inquiry_template` or legacy `template`; each
    name is one of RELATIONSHIPS_READ, whose keys normalise_envelope re-cases."""
    for name in names:
        related = _kept(_dig(obj, "relationships", name, "data", "id"), f"{path}.relationships.{name}.data.id")
        if related:
            return related
    return None


def _checks(attributes: dict, path: str) -> list[Check]:
    """`[{name, status}]`; entries without a string name are skipped, a missing status is `unknown`."""
    checks = attributes.get("checks")
    if not isinstance(checks, list):
        return []
    kept: list[Check] = []
    for index, check in enumerate(checks):
        name = _kept(check.get("name"), f"{path}.checks.{index}.name") if isinstance(check, dict) else None
        if name:
            status = _kept(check.get("status"), f"{path}.checks.{index}.status")
            kept.append({"name": name, "status": status or "unknown"})
    return kept


def _account_reference_id(included: Any, account_id: str | None) -> str | None:
    if not account_id or not isinstance(included, list):
        return None
    for index, item in enumerate(included):
        if isinstance(item, dict) and item.get("type") == "account" and item.get("id") == account_id:
            field = f"data.attributes.payload.included.{index}.attributes.reference_id"
            return _reference(_dig(item, "attributes", "reference_id"), field)
    return None


def _timestamps(attributes: dict, path: str) -> dict[str, str]:
    """The lifecycle timestamps in canonical form (`iso_millis`). The worker reads only `created_at`, so
    an unusable `created_at` string is an InvalidEvent; the others are dropped when unusable, since the
    service does not use them and must not refuse an authentic event for them."""
    kept = {}
    for name in LIFECYCLE_TIMESTAMPS:
        value = attributes.get(name)
        if not isinstance(value, str) or not value:
            continue
        try:
            kept[name] = iso_millis(parse_rfc3339(value))
        except ValueError as error:
            if name == "created_at":
                raise InvalidEvent(f"{path}.{name}", str(error)) from None
    return kept


def verification_kind(object_type: str) -> str | None:
    """`verification/government-id` → `government-id`."""
    prefix, sep, kind = object_type.partition("/")
    return kind if prefix == "verification" and sep and kind else None


def minimise(envelope: dict, body_hash: str) -> QueuedEvent:
    """The queued form of a validated, normalised envelope (domain/schemas.py): no personal data, JSON-safe.

    Every kept string satisfies `text_problem` and every kept time is canonical `iso_millis` in the year
    range; raises InvalidEvent (a ValueError) naming the first kept field that does not."""
    event = envelope["data"]
    attributes = event["attributes"]
    obj = attributes["payload"]["data"]
    path = "data.attributes.payload.data"
    obj_attributes = obj.get("attributes") if isinstance(obj.get("attributes"), dict) else {}
    account_id = _related_id(obj, path, "account")
    return {
        "event_id": _required(event["id"], "data.id"),
        "name": _required(attributes["name"], "data.attributes.name"),
        "created_at": iso_millis(attributes["created_at"]),
        "body_sha256": body_hash,
        "object_type": _required(obj["type"], f"{path}.type"),
        "object_id": _required(obj["id"], f"{path}.id"),
        # Statuses get the rule of any kept text, not a list of known values: Persona adds statuses without
        # notice and the worker ignores those it does not know (domain/state_machine.py), so refusing one
        # would lose an authentic event; but it is still queued and stored in the event's JSON payload.
        "status": _kept(obj_attributes.get("status"), f"{path}.attributes.status"),
        "reference_id": _reference(obj_attributes.get("reference_id"), f"{path}.attributes.reference_id"),
        "account_id": account_id,
        "account_reference_id": _account_reference_id(attributes["payload"].get("included"), account_id),
        "template_id": _related_id(obj, path, "inquiry_template", "template"),
        "inquiry_id": _related_id(obj, path, "inquiry"),
        "verification_type": verification_kind(obj["type"]),
        "checks": _checks(obj_attributes, f"{path}.attributes"),
        "timestamps": _timestamps(obj_attributes, f"{path}.attributes"),
    }
