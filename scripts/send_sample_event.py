"""Post a correctly signed sample Persona event to a running persona-events.

The body is a fixture from tests/fixtures, with the reference id filled in, signed with the first
of PERSONA_WEBHOOK_SECRETS (environment or .env; the dev stack's development secret otherwise).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import requests
from dotenv import load_dotenv

from app.signature import sign
from scripts.devstack import DEV_WEBHOOK_SECRET

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


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
    args = parser.parse_args(argv)
    body = (FIXTURES / args.fixture).read_bytes().replace(b"$REFERENCE_ID", args.reference_id.encode())
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
