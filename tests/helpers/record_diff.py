"""A user's record as GET /users answers it, compared with the record expected from a generated stream."""

from __future__ import annotations

from collections import Counter

import requests


def _actual(record: dict) -> dict:
    """The parts of a GET /users answer that are compared, in the expected record's shape."""
    return {
        "reference_id": record.get("reference_id"),
        "persona_account_id": record.get("persona_account_id"),
        "status": record.get("status"),
        "inquiry_id": record.get("inquiry_id"),
        "decision": record.get("decision"),
        "next_action": record.get("next_action"),
        "strikes": record.get("strikes"),
        "inquiries": {i["id"]: i["status"] for i in record.get("inquiries", [])},
        "templates": {i["id"]: i.get("template_id") for i in record.get("inquiries", [])},
        "verifications": {
            v["id"]: {
                "inquiry_id": v.get("inquiry_id"),
                "type": v.get("type"),
                "status": v["status"],
                "checks": v.get("checks"),
            }
            for v in record.get("verifications", [])
        },
        "event_ids": {h["event_id"] for h in record.get("history", [])},
    }


def record_diff(key: str, expected: dict, answer: requests.Response) -> list[str]:
    """How a GET /users/<key> answer differs from the expected record (tests/e2e/stream.py), one line each."""
    if answer.status_code != 200:
        return [f"{key}: GET answered {answer.status_code} {answer.text[:200]}"]
    record = answer.json()
    actual = _actual(record)
    diffs = [
        f"{key}.{name}: expected {expected[name]!r}, got {actual[name]!r}"
        for name in actual
        if name != "event_ids" and actual[name] != expected[name]
    ]
    history_ids = [h["event_id"] for h in record.get("history", [])]
    repeated = sorted(event_id for event_id, n in Counter(history_ids).items() if n > 1)
    missing, extra = expected["event_ids"] - actual["event_ids"], actual["event_ids"] - expected["event_ids"]
    if missing or extra or repeated:
        diffs.append(
            f"{key}.history: {len(history_ids)} rows for {len(expected['event_ids'])} events; "
            f"missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}, repeated {repeated[:5]}"
        )
    return diffs
