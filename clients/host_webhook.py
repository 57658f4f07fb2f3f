"""The host application's webhook: `user.updated` notifications POSTed to HOST_WEBHOOK_URL, signed per the Standard
Webhooks specification (https://www.standardwebhooks.com) by the `standardwebhooks` package: headers `webhook-id`,
`webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`)."""

from __future__ import annotations

import json
from datetime import datetime

import requests
from standardwebhooks import Webhook

# (connect, read) seconds: a host that does not answer within these is retried on the schedule, not waited on.
TIMEOUTS = (3.05, 10)
# How much of a refusal's body is kept as the reason (the outbox keeps 500 characters).
REASON_CHARS = 200


class HostWebhook:
    def __init__(self, url: str, secret: str, session: requests.Session | None = None):
        self.url = url
        self.signer = Webhook(secret)
        self.session = session or requests.Session()

    def send(self, message_id: str, body: dict, at: datetime) -> str | None:
        """POST `body` signed as `message_id` at `at`; None when the host answered 2xx, else why not (one line)."""
        payload = json.dumps(body, separators=(",", ":"))
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self.signer.sign(message_id, at, payload),
        }
        try:
            response = self.session.post(self.url, data=payload.encode(), headers=headers, timeout=TIMEOUTS)
        except requests.RequestException as error:
            return f"{type(error).__name__}: no answer from the host"
        if 200 <= response.status_code < 300:
            return None
        reason = " ".join(response.text[:REASON_CHARS].split())
        return f"HTTP {response.status_code}{': ' + reason if reason else ''}"

    def close(self) -> None:
        self.session.close()
