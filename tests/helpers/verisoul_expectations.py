"""What Verisoul and each record's `verisoul` block should end with for a generated stream, and the checks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from tests.e2e.stream import BLOCK_DAYS, NEGATIVE, Stream, expected_records, iso, parse

VERIFIED = {"completed", "approved"}
# What the checks call a write, by the fake's action name in each flavor.
WRITES = {
    "account": {"enroll": "enroll", "block": "block", "unblock": "unblock"},
    "lists": {"update": "enroll", "block": "block", "unblock": "unblock"},
}


@dataclass(frozen=True)
class Expected:
    """What one user's record and Verisoul account should end with."""

    key: str
    verified: bool  # some inquiry's final status is completed/approved: the sync must enroll (unless linked)
    maybe_verified: bool  # some inquiry had a completed/approved event: an intermediate state may have enrolled
    maybe_blocked: bool  # some intermediate state could hold a block in force after the test started
    blocked: bool  # a block is in force now
    until: datetime | None  # its end; None when permanent or not blocked
    permanent: bool
    duplicate: bool  # linked to other accounts in the fake before the stream
    decision: str
    next_action: str
    provisional: bool = False  # kept under a Persona account id: Verisoul is never called for it


def is_provisional(key: str) -> bool:
    """A user without a reference id ends keyed by its Persona account id (docs/contracts.md §4)."""
    return key.startswith("act_")


def expectations(stream: Stream, now: datetime, started: datetime, duplicates: set[str]) -> dict[str, Expected]:
    """Each user's Expected at `now`, for a stream posted from `started`; `duplicates` were linked beforehand."""
    records = expected_records(stream.facts, now)
    by_inquiry: dict[str, list] = {}
    for fact in stream.facts:
        if fact.kind == "inquiry":
            by_inquiry.setdefault(fact.inquiry_id, []).append(fact)
    out = {}
    for key, record in records.items():
        facts = [fact for inquiry_id in record["inquiries"] for fact in by_inquiry[inquiry_id]]
        since, until = record["_block_since"], record["_block_until"]
        blocked = since is not None and (until is None or now < until)
        duplicate = key in duplicates
        verified = any(status in VERIFIED for status in record["inquiries"].values())
        decision, next_action = record["decision"], record["next_action"]
        if decision == "allow" and duplicate:
            decision, next_action = "review", "wait"
        if is_provisional(key):
            # Verisoul accounts are the host's user ids; a record without one is never synced.
            out[key] = Expected(key, False, False, False, False, None, False, False, decision, next_action, True)
            continue
        out[key] = Expected(
            key=key,
            verified=verified,
            maybe_verified=any(fact.status in VERIFIED for fact in facts),
            maybe_blocked=_maybe_blocked(facts, started),
            blocked=blocked,
            until=until if blocked else None,
            permanent=blocked and until is None,
            duplicate=duplicate,
            decision=decision,
            next_action=next_action,
        )
    return out


def _maybe_blocked(facts: list, started: datetime) -> bool:
    """Whether any state the shuffled stream can pass through holds a block in force at or after `started`.

    A state has each inquiry at one of its events' statuses (or not yet seen). More negative inquiries mean a
    longer block and a later start, so the longest block any state can hold takes every inquiry that has a
    negative event at its latest one.
    """
    latest_negative: dict[str, str] = {}
    for fact in facts:
        if fact.status in NEGATIVE:
            latest_negative[fact.inquiry_id] = max(latest_negative.get(fact.inquiry_id, ""), fact.at)
    strikes = len(latest_negative)
    if strikes == 0:
        return False
    if strikes >= 3:
        return True
    return parse(max(latest_negative.values())) + timedelta(days=BLOCK_DAYS[strikes]) > started


def successful_writes(calls: list[dict], flavor: str) -> dict[str, list[str]]:
    """Successful enroll/block/unblock calls per account id, in the order the fake answered them."""
    names = WRITES[flavor]
    out: dict[str, list[str]] = {}
    for call in calls:
        if call["status"] < 400 and call["action"] in names:
            out.setdefault(call["account_id"], []).append(names[call["action"]])
    return out


def successful_reads(calls: list[dict]) -> Counter:
    """Successful reads of an account, per account id."""
    return Counter(call["account_id"] for call in calls if call["status"] < 400 and call["action"] == "get")


def _fake_enrolled(account: dict | None, flavor: str) -> bool:
    if account is None:
        return False
    if flavor == "account":
        return account["enrolled"]
    return account["metadata"].get("persona_verified") is True


def call_problems(e: Expected, writes: list[str], reads: int, account: dict | None, flavor: str) -> list[str]:
    """Invariants (a)–(d) of one user's calls and the fake's final account state."""
    problems = []
    enrolls = writes.count("enroll")
    toggles = [w for w in writes if w != "enroll"]
    if enrolls > 1:
        problems.append(f"{enrolls} successful enrolls (at most one): {writes}")
    if e.duplicate and enrolls:
        problems.append(f"enrolled although linked to other accounts: {writes}")
    elif e.verified and not e.duplicate and enrolls != 1:
        problems.append(f"verified and unique, yet {enrolls} enrolls: {writes}")
    elif not e.maybe_verified and enrolls:
        problems.append(f"never verified in any state, yet enrolled: {writes}")
    bad_order = [i for i, w in enumerate(toggles) if w != ("block" if i % 2 == 0 else "unblock")]
    if bad_order:
        problems.append(f"blocks and unblocks do not alternate from a block: {toggles}")
    if not e.maybe_blocked and toggles:
        problems.append(f"every possible block had expired, yet Verisoul got {toggles}")
    if e.blocked and not toggles:
        problems.append("block in force, but Verisoul never got a block")
    fake_blocked = bool(account and account["blocked"])
    if fake_blocked != e.blocked:
        problems.append(f"Verisoul says blocked={fake_blocked}, expected {e.blocked} (calls {toggles})")
    if _fake_enrolled(account, flavor) != (enrolls == 1):
        problems.append(f"Verisoul says enrolled={_fake_enrolled(account, flavor)} after {enrolls} enrolls")
    if e.duplicate and e.verified and not reads:
        problems.append("verified, but the account was never read for one person, one account")
    if flavor == "account" and enrolls and account is not None and account["externalId"] != e.key:
        problems.append(f"enrolled with externalId {account['externalId']!r}, expected {e.key!r}")
    return problems


def record_problems(e: Expected, record: dict, writes: list[str], reads: int) -> list[str]:
    """The record's verisoul block and decision, against the expectation and against what Verisoul got."""
    v = record.get("verisoul") or {}
    # Verified only in some intermediate state: enrolled or not, as long as it says what Verisoul got.
    either = e.maybe_verified and not e.verified
    expected = {
        "account_id": e.key,
        "enrolled": (writes.count("enroll") == 1) if either and not e.duplicate else (e.verified and not e.duplicate),
        "blocked": e.blocked,
        "blocked_until": iso(e.until) if e.until else None,
        "permanent_block": e.permanent,
        # Set when an enroll found the account linked: certain for verified users, possible for those that
        # were verified only in some intermediate state (then it goes with a read of the account).
        "duplicate_account": (reads > 0 if e.duplicate and either else (e.duplicate and e.verified)),
        "synced": not e.provisional,
    }
    problems = [
        f"verisoul.{name}: expected {value!r}, got {v.get(name)!r}"
        for name, value in expected.items()
        if v.get(name) != value
    ]
    if (record.get("decision"), record.get("next_action")) != (e.decision, e.next_action):
        problems.append(
            f"decision/next_action: expected {(e.decision, e.next_action)}, "
            f"got {(record.get('decision'), record.get('next_action'))}"
        )
    return problems
