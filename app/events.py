"""Event normalisation and minimisation. Pure: dicts in, dicts out.

Persona lets each webhook choose kebab (`reference-id`), snake (`reference_id`) or camel
(`referenceId`) keys. Keys are normalised to snake case once, as soon as the body is parsed;
values (event names, statuses, ids) are never re-cased.

Minimisation keeps what the service acts on (ids, statuses, timestamps, check results) and drops
everything else, so personal data never reaches Redis, the worker or the database: the payload is
rebuilt from an allowlist, never filtered by a denylist, because Persona adds attributes over time.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

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

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@lru_cache(maxsize=4096)
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


def is_queued_name(name: str) -> bool:
    """`inquiry.*` and `verification.*`, including names Persona adds later."""
    return name.startswith(QUEUED_PREFIXES)


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _related_id(obj: dict, *names: str) -> str | None:
    """The id of the first named relationship present, e.g. `inquiry_template` or legacy `template`."""
    for name in names:
        related = _text(_dig(obj, "relationships", name, "data", "id"))
        if related:
            return related
    return None


def _checks(attributes: Any) -> list[dict[str, str]]:
    checks = _dig(attributes, "checks")
    if not isinstance(checks, list):
        return []
    return [
        {"name": check["name"], "status": _text(check.get("status")) or "unknown"}
        for check in checks
        if isinstance(check, dict) and _text(check.get("name"))
    ]


def _account_reference_id(included: Any, account_id: str | None) -> str | None:
    if not account_id or not isinstance(included, list):
        return None
    for item in included:
        if isinstance(item, dict) and item.get("type") == "account" and item.get("id") == account_id:
            return _text(_dig(item, "attributes", "reference_id"))
    return None


def verification_kind(object_type: str) -> str | None:
    """`verification/government-id` → `government-id`."""
    prefix, sep, kind = object_type.partition("/")
    return kind if prefix == "verification" and sep and kind else None


def iso_millis(moment: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix: the form Persona uses and the order events are compared in."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def minimise(envelope: dict, body_hash: str) -> dict:
    """The queued form of a validated, normalised envelope: no personal data, JSON-safe."""
    event = envelope["data"]
    attributes = event["attributes"]
    obj = attributes["payload"]["data"]
    obj_attributes = obj.get("attributes") if isinstance(obj.get("attributes"), dict) else {}
    account_id = _related_id(obj, "account")
    timestamps = {name: _text(obj_attributes.get(name)) for name in LIFECYCLE_TIMESTAMPS}
    return {
        "event_id": event["id"],
        "name": attributes["name"],
        "created_at": iso_millis(attributes["created_at"]),
        "body_sha256": body_hash,
        "object_type": obj["type"],
        "object_id": obj["id"],
        "status": _text(obj_attributes.get("status")),
        "reference_id": _text(obj_attributes.get("reference_id")),
        "account_id": account_id,
        "account_reference_id": _account_reference_id(attributes["payload"].get("included"), account_id),
        "template_id": _related_id(obj, "inquiry_template", "template"),
        "inquiry_id": _related_id(obj, "inquiry"),
        "verification_type": verification_kind(obj["type"]),
        "checks": _checks(obj_attributes),
        "timestamps": {name: value for name, value in timestamps.items() if value},
    }
