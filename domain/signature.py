"""Persona-Signature verification. Pure: bytes and strings in, a verdict out.

Trust model: a webhook is untrusted until an HMAC-SHA256 of its raw bytes, keyed by one of our
secrets, matches a `v1` in the header, and the header's `t` is within the tolerance of our clock.
The header may carry several `v1` values during a secret rotation, in either of the forms Persona
sends (`t=..,v1=a t=..,v1=b` or `t=..,v1=a v1=b`); any match of any secret is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]{1,12}")
# Persona sends one `v1`, two during a secret rotation. Each distinct `t` costs an HMAC of the whole body
# per secret, before anything is authenticated: a header carrying hundreds of pairs (repeated headers are
# joined) would let an unsigned request burn a worker's CPU. More than this is malformed.
MAX_SIGNATURES = 8


class SignatureError(Exception):
    """The signature is missing, malformed, out of tolerance or wrong; `reason` says which."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SignedValue:
    """One `v1` value and the `t` it was sent with."""

    timestamp: int
    signature: str  # lower-case hex


def parse_header(header: str | None) -> list[SignedValue]:
    """Pair each `v1` with the `t` before it, whatever the grouping; unknown elements are skipped."""
    if not header or not header.strip():
        raise SignatureError("missing", "Persona-Signature header is missing")
    pairs: list[SignedValue] = []
    timestamp: int | None = None
    for element in re.split(r"[\s,]+", header.strip()):
        key, _, value = element.partition("=")
        if key == "t":
            if not _DIGITS.fullmatch(value):
                raise SignatureError("malformed", "Persona-Signature t= is not a unix time in seconds")
            timestamp = int(value)
        elif key == "v1" and timestamp is not None and _HEX64.fullmatch(value):
            pairs.append(SignedValue(timestamp, value.lower()))
            if len(pairs) > MAX_SIGNATURES:
                raise SignatureError("malformed", f"Persona-Signature carries more than {MAX_SIGNATURES} signatures")
    if not pairs:
        raise SignatureError("malformed", "Persona-Signature needs t=<seconds> followed by v1=<64 hex digits>")
    return pairs


def compute(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `v1` Persona sends: HMAC-SHA256(secret, "<t>." + raw body), lower-case hex."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """A complete header value, as Persona would send it (used by scripts and tests)."""
    return f"t={timestamp},v1={compute(secret, timestamp, body)}"


def verify(body: bytes, header: str | None, secrets: Iterable[str], now: float, tolerance: int) -> int:
    """Return the signed timestamp when authentic, else raise SignatureError."""
    pairs = parse_header(header)
    fresh = [pair for pair in pairs if abs(now - pair.timestamp) <= tolerance]
    if not fresh:
        if all(pair.timestamp > now for pair in pairs):
            raise SignatureError("future", f"Persona-Signature timestamp is more than {tolerance} s ahead")
        raise SignatureError("stale", f"Persona-Signature timestamp is older than {tolerance} s")
    matched = None
    # One HMAC per secret and distinct `t`; every pair compared without stopping early, so timing says
    # nothing about which secret matched.
    for secret in secrets:
        expected = {timestamp: compute(secret, timestamp, body) for timestamp in {pair.timestamp for pair in fresh}}
        for pair in fresh:
            if hmac.compare_digest(expected[pair.timestamp], pair.signature):
                matched = pair.timestamp
    if matched is None:
        raise SignatureError("mismatch", "Persona-Signature does not match the body")
    return matched
