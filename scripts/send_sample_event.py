"""Post a correctly signed sample Persona event to a running persona-events.

The body is a fixture from tests/fixtures, with the reference id filled in, signed with the first
of PERSONA_WEBHOOK_SECRETS (environment or .env; the dev stack's development secret otherwise).
As captured, it is always the same event: posted again it is a `duplicate`, also after a restart of
the dev stack, whose Redis keeps its dedupe marks for 7 days in var/redis.

With `--status`, it is a new event each time (a fresh event id, created now) moving the user's inquiry
(`--inquiry-id`, default one per reference id) to that status, under Persona's event name for it: walk
a user through a lifecycle with `--status created`, `--status completed`, `--status approved`...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from dotenv import load_dotenv

from domain.signature import sign
from domain.times import iso_millis
from scripts.devstack import DEV_WEBHOOK_SECRET

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
# Persona's inquiry event for each status the payload then carries: the status names the event but for
# two (`inquiry.started` → pending, `inquiry.marked-for-review` → needs_review). Source: Persona's
# documentation of its inquiry webhook events.
# The Persona account of the captured sandbox delivery (tests/fixtures/sandbox_inquiry_approved.json).
FIXTURE_ACCOUNT = b"act_wU2yVJZ7gCTQiDHnKQksWSMUy8fv"
EVENT_FOR_STATUS = {
    "created": "inquiry.created",
    "pending": "inquiry.started",
    "completed": "inquiry.completed",
    "failed": "inquiry.failed",
    "expired": "inquiry.expired",
    "needs_review": "inquiry.marked-for-review",
    "approved": "inquiry.approved",
    "declined": "inquiry.declined",
}


def sample_body(fixture: str, reference_id: str, status: str | None = None, inquiry_id: str | None = None) -> bytes:
    """The fixture as Persona sent it, for this user; with a status, a new event of that status for the user's
    inquiry. Each reference id gets its own Persona account: with the fixture's one account, every sample
    user would be linked to every other (one account, one person), and a replay of one would touch them all."""
    # as the content of a JSON string: an id holding a quote or a backslash must not break the document
    raw = (FIXTURES / fixture).read_bytes().replace(b"$REFERENCE_ID", json.dumps(reference_id)[1:-1].encode())
    raw = raw.replace(FIXTURE_ACCOUNT, b"act_sample_" + hashlib.sha256(reference_id.encode()).hexdigest()[:24].encode())
    if status is None:
        return raw
    document = json.loads(raw)
    now = iso_millis(datetime.now(UTC))
    event = document["data"]
    event["id"] = f"evt_sample_{secrets.token_hex(8)}"
    event["attributes"]["name"] = EVENT_FOR_STATUS[status]
    event["attributes"]["created-at"] = now
    inquiry = event["attributes"]["payload"]["data"]
    inquiry["id"] = inquiry_id or f"inq_sample_{reference_id}"
    inquiry["attributes"].update({"status": status, "updated-at": now})
    return json.dumps(document).encode()


def _secret() -> str:
    load_dotenv(FIXTURES.parent.parent / ".env", override=False)
    secrets = [s.strip() for s in os.environ.get("PERSONA_WEBHOOK_SECRETS", "").split(",") if s.strip()]
    return secrets[0] if secrets else DEV_WEBHOOK_SECRET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/webhooks/persona")
    parser.add_argument("--fixture", default="sandbox_inquiry_approved.json", help="a file in tests/fixtures")
    parser.add_argument("--reference-id", default="user_sample_1", help="substituted for $REFERENCE_ID")
    parser.add_argument("--times", type=int, default=1, help="post the same event this many times")
    parser.add_argument("--status", choices=EVENT_FOR_STATUS, help="a new event moving the inquiry to this status")
    parser.add_argument("--inquiry-id", help="with --status: the inquiry (default: inq_sample_<reference id>)")
    args = parser.parse_args(argv)
    body = sample_body(args.fixture, args.reference_id, args.status, args.inquiry_id)
    secret = _secret()
    for _ in range(args.times):
        headers = {"Content-Type": "application/json", "Persona-Signature": sign(secret, int(time.time()), body)}
        try:
            response = requests.post(args.url, data=body, headers=headers, timeout=10)
        except requests.RequestException as error:
            print(f"send_sample_event: cannot reach {args.url}: {error}", file=sys.stderr)
            return 1
        print(response.status_code, response.text.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
