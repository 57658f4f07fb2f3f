"""Inquiry facts on a fixed clock, for the decision policy and the sync plan (domain/policy.py, sync_plan.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.policy import InquiryFacts

BASE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MICROSECOND = timedelta(microseconds=1)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def inquiry(id: str, status: str, created: datetime = BASE, since: datetime | None = None) -> InquiryFacts:
    return InquiryFacts(id, status, iso(created), iso(since or created))


def negatives(count: int) -> list[InquiryFacts]:
    """`count` failed/declined inquiries, one a day; the latest negative decision is at BASE + count days."""
    return [
        inquiry(f"inq_{n}", ("declined", "failed")[n % 2], BASE + (n - 1) * DAY, BASE + n * DAY)
        for n in range(1, count + 1)
    ]
