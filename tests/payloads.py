"""Test payloads: the shared fixtures, re-cased and re-signed the way Persona would send them."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from domain.signature import sign

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_NAMES = (
    "sandbox_inquiry_approved.json",
    "docs_inquiry_completed.json",
    "docs_verification_passed.json",
    "docs_inquiry_approved_overview.json",
)
CASINGS = ("kebab", "snake", "camel")
SECRET = "wbhsec_test_secret"


def load_fixture(name: str, reference_id: str = "user_1") -> dict:
    text = (FIXTURES / name).read_text()
    return json.loads(text.replace("$REFERENCE_ID", reference_id))


def _recase_key(key: str, casing: str) -> str:
    words = re.split(r"[-_]", key)
    if casing == "kebab":
        return "-".join(words)
    if casing == "snake":
        return "_".join(words)
    return words[0] + "".join(word[:1].upper() + word[1:] for word in words[1:])


def recase(value, casing: str):
    """Every key in `casing`, as a webhook configured that way sends it; values untouched."""
    if isinstance(value, dict):
        return {_recase_key(k, casing): recase(v, casing) for k, v in value.items()}
    if isinstance(value, list):
        return [recase(v, casing) for v in value]
    return value


def encode(document: dict) -> bytes:
    return json.dumps(document).encode()


def headers(body: bytes, secret: str = SECRET, timestamp: int | None = None, **extra) -> dict:
    signed = sign(secret, int(time.time()) if timestamp is None else timestamp, body)
    return {"Content-Type": "application/json", "Persona-Signature": signed, **extra}


WEBHOOK = "/webhooks/persona"
# Personal attributes (kebab case) of a full Persona document: what a minimised event must not keep.
PERSONAL_ATTRIBUTES = {
    "name-first": "Alexander",
    "name-last": "Sample",
    "birthdate": "1977-07-17",
    "address-street-1": "600 California Street",
}


def envelope(
    name: str = "inquiry.approved",
    event_id: str = "evt_test_1",
    created_at: str = "2024-07-08T14:29:24.297Z",
    object_type: str = "inquiry",
    object_id: str = "inq_test_1",
    attributes: dict | None = None,
) -> dict:
    """The smallest valid event envelope (kebab case), for tests that need one of their own."""
    payload = {"data": {"type": object_type, "id": object_id, "attributes": attributes or {"status": "approved"}}}
    event_attributes = {"name": name, "created-at": created_at, "payload": payload}
    return {"data": {"type": "event", "id": event_id, "attributes": event_attributes}}


def recase_key(key: str, casing: str) -> str:
    """One key in `casing` (for documents that mix casings)."""
    return _recase_key(key, casing)


# Keys (snake-cased) whose values are personal data; everything beneath them counts, except the
# `type` tags of Persona's `fields` wrappers and timestamps, which say nothing about the person.
_PERSONAL_KEY = re.compile(
    r"(native_)?name_.*|birthdate|address_.*|identification_numbers?|social_security_number|email_address"
    r"|phone_number|ip_address|latitude|longitude|document_number|sex|nationality|birthplace|fields|.*_urls?|.*photo"
)
_NOT_PERSONAL_LEAF = re.compile(r"type|.*_at")


def _snake(key: str) -> str:
    """Written out here rather than imported, so the leak check does not lean on the code it checks."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).replace("-", "_").lower()


def personal_values(document) -> set[str]:
    """Every scalar (as text) under a personal-data key of `document`, in any key casing."""
    found: set[str] = set()

    def leaves(value, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                leaves(v, _snake(k))
        elif isinstance(value, list):
            for v in value:
                leaves(v, key)
        elif value is not None and not isinstance(value, bool) and not _NOT_PERSONAL_LEAF.fullmatch(key):
            found.add(str(value))

    def walk(value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if _PERSONAL_KEY.fullmatch(_snake(k)):
                    leaves(v, _snake(k))
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(document)
    return found


def recase_randomly(value, random):
    """Every key in a casing of its own (kebab, snake or camel), mixed within one document; `random` is
    a random.Random (hypothesis: st.randoms())."""
    if isinstance(value, dict):
        return {_recase_key(k, random.choice(CASINGS)): recase_randomly(v, random) for k, v in value.items()}
    if isinstance(value, list):
        return [recase_randomly(v, random) for v in value]
    return value
