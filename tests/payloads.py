"""Test payloads: the shared fixtures, re-cased and re-signed the way Persona would send them."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from app.signature import sign

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
