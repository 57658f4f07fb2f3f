"""A generated stream of Persona webhook events for many users, and each user's expected record.

The expected record is computed here from the generated facts, with its own reading of docs/contracts.md §4/§5
and docs/persona.md; nothing in this module imports the service's state machine, policy or record code,
so a shared mistake cannot make the end-to-end test agree with itself.

Generation is seeded (`random.Random(seed)`); times are anchored to `now` so that some users' blocks
are in force when the test runs and most have long expired.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from tests.payloads import CASINGS, encode, recase

# ---------------------------------------------------------------------------------------------
# Persona's vocabulary (docs/persona.md, "Event names and statuses")

EVENT_NAME = {
    "created": "inquiry.created",
    "pending": "inquiry.started",
    "completed": "inquiry.completed",
    "approved": "inquiry.approved",
    "declined": "inquiry.declined",
    "failed": "inquiry.failed",
    "expired": "inquiry.expired",
    "needs_review": "inquiry.marked-for-review",
}
# Equal event times go to the status further along the lifecycle.
RANK = {
    "created": 0,
    "pending": 1,
    "expired": 2,
    "completed": 3,
    "needs_review": 4,
    "failed": 5,
    "approved": 5,
    "declined": 5,
}
NEGATIVE = {"failed", "declined"}
# docs/contracts.md §5: status of the latest inquiry → (decision, next_action)
DECISION = {
    "none": ("verify", "create_inquiry"),
    "created": ("resume", "resume_inquiry"),
    "pending": ("resume", "resume_inquiry"),
    "expired": ("verify", "create_inquiry"),
    "completed": ("allow", "none"),
    "approved": ("allow", "none"),
    "needs_review": ("review", "wait"),
    "failed": ("deny", "none"),
    "declined": ("deny", "none"),
}
BLOCK_DAYS = {1: 7, 2: 30}  # 3+ strikes: permanent

# Lifecycles an inquiry goes through, with how often each is drawn.
PATHS = [
    (20, ("created", "pending", "completed", "approved")),
    (8, ("created", "pending", "completed", "declined")),
    (6, ("created", "pending", "expired")),
    (2, ("created", "expired")),
    (5, ("created", "pending", "expired", "pending", "completed", "approved")),
    (5, ("created", "pending", "completed", "needs_review", "approved")),
    (4, ("created", "pending", "completed", "needs_review", "declined")),
    (3, ("created", "pending", "completed", "needs_review")),
    (6, ("created", "pending", "failed")),
    (3, ("created", "pending", "completed", "approved", "declined")),  # reviewer reversal
    (3, ("created", "pending", "completed", "declined", "approved")),  # reviewer override
    (1, ("created", "pending", "completed", "declined", "approved", "declined")),
    (4, ("created",)),  # abandoned
    (5, ("created", "pending")),  # abandoned mid-way
    (4, ("created", "pending", "completed")),  # no decision step in the workflow
]
# A user who keeps failing: the paths that end negatively.
NEGATIVE_PATHS = [(w, p) for w, p in PATHS if p[-1] in NEGATIVE]

TEMPLATES = ("itmpl_Gov1dSelfie9aXk2mQ7", "itmpl_DbOnlyq3Ls8Rw2Zt", "itmpl_KycPlus5vNh4Jd1")
FIRST_NAMES = ("Jane", "Ade", "Mei", "Lucas", "Priya", "Omar", "Sofia", "Kwame")
LAST_NAMES = ("Doe", "Okafor", "Chen", "Silva", "Iyer", "Haddad", "Rossi", "Mensah")
CHECKS = {
    "government-id": ("id_expired_detection", "id_portrait_detection", "id_tamper_detection", "id_barcode_detection"),
    "selfie": ("selfie_id_comparison", "selfie_liveness_detection", "selfie_glasses_detection"),
}
PAST_START = datetime(2024, 1, 1, tzinfo=UTC)


def iso(moment: datetime) -> str:
    """`2026-11-01T10:00:00.123Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# ---------------------------------------------------------------------------------------------
# Facts: what each generated event says, in plain form (the expected records are computed from these)


@dataclass(frozen=True)
class Fact:
    event_id: str
    kind: str  # inquiry | verification
    object_id: str
    inquiry_id: str
    at: str  # event created-at
    status: str
    account_id: str | None = None  # inquiry events
    reference_id: str | None = None  # the inquiry's reference-id, or the included account's
    template_id: str | None = None
    inquiry_created_at: str | None = None
    verification_type: str | None = None
    checks: tuple[tuple[str, str], ...] = ()

    @property
    def account(self) -> str:
        """An inquiry event's account id: the generator gives every inquiry one."""
        assert self.account_id is not None, f"{self.event_id}: an inquiry event without an account"
        return self.account_id


@dataclass
class Stream:
    now: datetime
    facts: list[Fact] = field(default_factory=list)
    bodies: dict[str, bytes] = field(default_factory=dict)  # event id → the body as posted (signed when sent)
    users: list[str] = field(default_factory=list)  # the key each user is recorded under
    tags: dict[str, set[str]] = field(default_factory=dict)  # user key → what the generator gave it

    @property
    def event_ids(self) -> set[str]:
        return set(self.bodies)


class _Ids:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.seen: set[str] = set()

    def token(self, prefix: str, length: int = 24) -> str:
        while True:
            value = prefix + "".join(self.rng.choices(string.ascii_letters + string.digits, k=length))
            if value not in self.seen:
                self.seen.add(value)
                return value


def _gap(rng: random.Random, before: str, after: str) -> timedelta:
    """How long Persona's lifecycle realistically spends between two statuses (always >= 1 s)."""
    seconds = {
        ("created", "pending"): (5, 900),
        ("expired", "pending"): (3600, 3 * 86400),  # the user resumes an expired inquiry
        ("pending", "completed"): (60, 1800),
        ("pending", "failed"): (60, 1200),
        ("pending", "expired"): (86400, 86400 + 3600),
        ("created", "expired"): (86400, 86400 + 3600),
        ("completed", "approved"): (1, 60),
        ("completed", "declined"): (1, 60),
        ("completed", "needs_review"): (1, 30),
        ("needs_review", "approved"): (3600, 2 * 86400),
        ("needs_review", "declined"): (3600, 2 * 86400),
        ("approved", "declined"): (86400, 6 * 86400),  # a reviewer reverses the decision
        ("declined", "approved"): (86400, 6 * 86400),
    }[(before, after)]
    return timedelta(milliseconds=rng.randint(seconds[0] * 1000, seconds[1] * 1000))


def _pick_path(rng: random.Random, paths) -> tuple[str, ...]:
    return rng.choices([p for _, p in paths], weights=[w for w, _ in paths])[0]


def _checks(rng: random.Random, kind: str, status: str) -> list[dict]:
    names = CHECKS[kind]
    statuses = ["passed"] * len(names)
    if status == "failed":
        statuses[rng.randrange(len(names))] = "failed"
    elif rng.random() < 0.3:
        statuses[-1] = "not_applicable"
    return [
        {
            "name": n,
            "status": s,
            "reasons": [] if s == "passed" else ["generated"],
            "requirement": "required",
            "metadata": {},
        }
        for n, s in zip(names, statuses, strict=True)
    ]


def _person(rng: random.Random) -> dict:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return {
        "name-first": first,
        "name-last": last,
        "birthdate": f"19{rng.randint(50, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        "address-city": "San Francisco",
        "identification-number": f"Y{rng.randint(100000, 999999)}",
    }


def _envelope(event_id: str, name: str, at: str, data: dict, included: list | None = None) -> dict:
    payload = {"data": data, "included": included or []}
    return {
        "data": {"type": "event", "id": event_id, "attributes": {"name": name, "created-at": at, "payload": payload}}
    }


class _UserBuilder:
    """One user's inquiries and verifications, as facts and envelopes, on a relative timeline."""

    def __init__(self, rng: random.Random, ids: _Ids, index: int, now: datetime):
        self.rng, self.ids, self.index, self.now = rng, ids, index, now
        self.tags: set[str] = set()

    def build(self) -> tuple[str, list[tuple[Fact, dict]], set[str]]:
        rng = self.rng
        account_id = self.ids.token("act_")
        no_reference = rng.random() < 0.10
        reference_id = None if no_reference else f"user_{self.index:03d}"
        self.tags.add("no_reference" if no_reference else "reference")
        count = rng.choices([1, 2, 3, 4], weights=[45, 30, 15, 10])[0]
        bad_actor = rng.random() < 0.12
        recent = rng.random() < 0.25
        self.tags.update({"recent" if recent else "past"} | ({"bad_actor"} if bad_actor else set()))
        # One inquiry of some users with a reference id carries none: resolved through the account
        # (sometimes the included account object names the reference id).
        unreferenced = rng.randrange(count) if reference_id and count > 1 and rng.random() < 0.15 else None
        timeline: list[tuple[timedelta, timedelta, dict, Fact]] = []  # (event time, inquiry created, ...)
        inquiry_start = timedelta(0)
        for n in range(1, count + 1):
            path = _pick_path(rng, NEGATIVE_PATHS if bad_actor and rng.random() < 0.8 else PATHS)
            inquiry_reference = reference_id
            included: list = []
            if n - 1 == unreferenced:
                inquiry_reference = None
                self.tags.add("inquiry_without_reference")
                if rng.random() < 0.5:
                    included = [{"type": "account", "id": account_id, "attributes": {"reference-id": reference_id}}]
                    self.tags.add("included_account")
            timeline += self._inquiry(n, path, inquiry_start, account_id, inquiry_reference, included)
            gap_days = (0.05, 2) if recent else (0.05, 20)
            inquiry_start += timedelta(milliseconds=rng.randint(int(gap_days[0] * 86400e3), int(gap_days[1] * 86400e3)))
        # Anchor the relative timeline: recent users end within the last 3 days, the rest in 2024.
        last = max(offset for offset, *_ in timeline)
        if recent:
            end = self.now - timedelta(milliseconds=rng.randint(5 * 60_000, 3 * 86400_000))
            origin = end - last
        else:
            origin = PAST_START + timedelta(milliseconds=rng.randint(0, 300 * 86400_000))
        events = []
        for offset, created, document, fact in timeline:
            events.append(_stamp(fact, document, iso(millis(origin + offset)), iso(millis(origin + created))))
        return (reference_id or account_id), events, self.tags

    def _inquiry(self, n, path, start, account_id, reference_id, included):
        rng = self.rng
        inquiry_id = f"inq_u{self.index:03d}_{n}"
        template_id = rng.choice(TEMPLATES)
        person = _person(rng)
        out = []
        offset = start
        previous = None
        pending_offsets = []
        for position, status in enumerate(path):
            if previous is not None:
                offset += _gap(rng, previous, status)
            name = EVENT_NAME[status]
            if status == "pending" and previous == "expired" and rng.random() < 0.5:
                name = "inquiry.transitioned"  # a resume reported under Persona's generic name
            event_id = self.ids.token("evt_")
            attributes = {"status": status, "reference-id": reference_id, "created-at": None, **person}
            attributes["fields"] = {"name-first": {"type": "string", "value": person["name-first"]}}
            data = {
                "type": "inquiry",
                "id": inquiry_id,
                "attributes": attributes,
                "relationships": {
                    "account": {"data": {"type": "account", "id": account_id}},
                    "inquiry-template": {"data": {"type": "inquiry-template", "id": template_id}},
                },
            }
            fact = Fact(
                event_id=event_id,
                kind="inquiry",
                object_id=inquiry_id,
                inquiry_id=inquiry_id,
                at="",
                status=status,
                account_id=account_id,
                reference_id=reference_id or (included[0]["attributes"]["reference-id"] if included else None),
                template_id=template_id,
            )
            out.append((offset, start, _envelope(event_id, name, "", data, included), fact))
            if status == "pending" and position + 1 < len(path):
                pending_offsets.append((offset, path[position + 1]))
            previous = status
        if {("approved", "declined"), ("declined", "approved")} & set(pairwise(path)):
            self.tags.add("reversal")
        # Verifications happen while the inquiry is pending, before its next status.
        inquiry_offsets = [o for o, *_ in out]
        for pending_offset, after in pending_offsets:
            if after not in ("completed", "failed") or rng.random() > 0.5:
                continue
            kinds = ["government-id"] + (["selfie"] if rng.random() < 0.4 else [])
            next_offset = min(o for o in inquiry_offsets if o > pending_offset)
            span = (next_offset - pending_offset) / 10
            for k, kind in enumerate(kinds, start=1):
                verification_id = f"ver_u{self.index:03d}_{n}_{k}"
                status = "failed" if after == "failed" or rng.random() < 0.15 else "passed"
                steps = (["submitted"] if rng.random() < 0.3 else []) + [status]
                for s, step in enumerate(steps):
                    at = pending_offset + span * (2 * k + s + 1)
                    out.append((at, start, *self._verification(verification_id, inquiry_id, kind, step, person)))
                self.tags.add("verification")
        return out

    def _verification(self, verification_id, inquiry_id, kind, status, person) -> tuple[dict, Fact]:
        rng = self.rng
        event_id = self.ids.token("evt_")
        checks = [] if status == "submitted" else _checks(rng, kind, status)
        attributes = {"status": status, "created-at": None, "checks": checks, **person}
        attributes["front-photo-url"] = "https://files.withpersona.com/id-front.jpg?access_token=T"
        data = {
            "type": f"verification/{kind}",
            "id": verification_id,
            "attributes": attributes,
            "relationships": {"inquiry": {"data": {"type": "inquiry", "id": inquiry_id}}},
        }
        fact = Fact(
            event_id=event_id,
            kind="verification",
            object_id=verification_id,
            inquiry_id=inquiry_id,
            at="",
            status=status,
            verification_type=kind,
            checks=tuple((c["name"], c["status"]) for c in checks),
        )
        return _envelope(event_id, f"verification.{status}", "", data), fact


def _stamp(fact: Fact, document: dict, at: str, created_at: str) -> tuple[Fact, dict]:
    """Put the anchored times into a fact and its envelope."""
    document["data"]["attributes"]["created-at"] = at
    obj = document["data"]["attributes"]["payload"]["data"]
    if fact.kind == "inquiry":
        obj["attributes"]["created-at"] = created_at
        obj["attributes"]["updated-at"] = at
        stamp = {
            "completed": "completed-at",
            "failed": "failed-at",
            "expired": "expired-at",
            "approved": "decisioned-at",
            "declined": "decisioned-at",
            "needs_review": "marked-for-review-at",
        }
        if fact.status in stamp:
            obj["attributes"][stamp[fact.status]] = at
        return Fact(**{**fact.__dict__, "at": at, "inquiry_created_at": created_at}), document
    obj["attributes"]["created-at"] = at
    if fact.status != "submitted":
        obj["attributes"]["completed-at"] = at
    return Fact(**{**fact.__dict__, "at": at}), document


def generate(seed: int, users: int, now: datetime, margin: timedelta = timedelta(minutes=10)) -> Stream:
    """`users` users' events; a user whose block would end within `margin` of `now` is drawn again."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    stream = Stream(now=now)
    for index in range(1, users + 1):
        while True:
            key, events, tags = _UserBuilder(rng, ids, index, now).build()
            facts = [fact for fact, _ in events]
            record = expected_records(facts, now)[key]
            until = record["_block_until"]
            if until is None or abs(until - now) > margin:
                break
        _check_times(facts)
        stream.users.append(key)
        stream.tags[key] = tags | _record_tags(record, now)
        for fact, document in events:
            stream.facts.append(fact)
            stream.bodies[fact.event_id] = encode(recase(document, rng.choice(CASINGS)))
    return stream


def _check_times(facts: list[Fact]) -> None:
    """Each object's events carry strictly increasing created-at times."""
    times: dict[str, list[str]] = {}
    for fact in facts:
        times.setdefault(fact.object_id, []).append(fact.at)
    for object_id, ats in times.items():
        assert ats == sorted(set(ats)), f"{object_id}: event times not strictly increasing: {ats}"


def _record_tags(record: dict, now: datetime) -> set[str]:
    tags = {f"status:{record['status']}", f"decision:{record['decision']}"}
    if record["_block_since"] is not None:
        until = record["_block_until"]
        if until is None:
            tags.add("block:permanent")
        elif until > now:
            tags.add(f"block:{record['strikes']}-strike-in-force")
        else:
            tags.add("block:expired")
            if record["status"] in NEGATIVE:
                tags.add("retry-after-block")  # may verify again (§5 as revised)
        if (until is None or until > now) and record["status"] not in NEGATIVE:
            tags.add("block-overrides-status")
    return tags


def deliveries(stream: Stream, seed: int, duplicate_share: float = 0.10) -> list[tuple[str, bytes]]:
    """Every event once, a share of them twice (the same bytes), shuffled globally."""
    rng = random.Random(seed + 1)
    once = sorted(stream.bodies.items())
    again = rng.sample(once, round(len(once) * duplicate_share))
    posts = once + again
    rng.shuffle(posts)
    return posts


# ---------------------------------------------------------------------------------------------
# The expected record of every user (docs/contracts.md §4, §5)


def _newest(facts: list[Fact], rank) -> Fact:
    return max(facts, key=lambda f: (f.at, rank(f.status), f.event_id))


def _status_since(facts: list[Fact]) -> str:
    """The event time of the first event of the final unbroken run of the final status."""
    ordered = sorted(facts, key=lambda f: (f.at, RANK[f.status], f.event_id))
    final = ordered[-1].status
    since = ordered[-1].at
    for fact in reversed(ordered):
        if fact.status != final:
            break
        since = fact.at
    return since


def user_keys(facts: list[Fact]) -> dict[str, str]:
    """Persona account id → the key its user is recorded under: a reference id any of its inquiries
    (or their included account) names, else the account id itself."""
    keys: dict[str, str] = {}
    for fact in facts:
        if fact.kind == "inquiry":
            if fact.reference_id:
                keys[fact.account] = fact.reference_id
            else:
                keys.setdefault(fact.account, fact.account)
    return keys


def expected_records(facts: list[Fact], now: datetime) -> dict[str, dict]:
    keys = user_keys(facts)
    by_inquiry: dict[str, list[Fact]] = {}
    by_verification: dict[str, list[Fact]] = {}
    for fact in facts:
        (by_inquiry if fact.kind == "inquiry" else by_verification).setdefault(fact.object_id, []).append(fact)
    inquiry_user: dict[str, str] = {}
    users: dict[str, dict] = {}
    for inquiry_id, snaps in by_inquiry.items():
        key = keys[snaps[0].account]
        inquiry_user[inquiry_id] = key
        newest = _newest(snaps, RANK.__getitem__)
        user = users.setdefault(
            key,
            {
                "reference_id": key,
                "persona_account_id": snaps[0].account_id,
                "inquiries": {},
                "templates": {},
                "verifications": {},
                "event_ids": set(),
                "_facts": {},
            },
        )
        user["inquiries"][inquiry_id] = newest.status
        user["templates"][inquiry_id] = newest.template_id
        user["event_ids"].update(f.event_id for f in snaps)
        user["_facts"][inquiry_id] = (newest.inquiry_created_at, newest.status, _status_since(snaps))
    for verification_id, snaps in by_verification.items():
        newest = _newest(snaps, lambda s: 0)  # distinct times per verification: the time decides
        user = users[inquiry_user[newest.inquiry_id]]
        user["verifications"][verification_id] = {
            "inquiry_id": newest.inquiry_id,
            "type": newest.verification_type,
            "status": newest.status,
            "checks": dict(newest.checks),
        }
        user["event_ids"].update(f.event_id for f in snaps)
    for user in users.values():
        _decide(user, now)
    return users


def _decide(user: dict, now: datetime) -> None:
    inquiries = user.pop("_facts")
    latest = max(inquiries.items(), key=lambda item: (item[1][0], item[0]), default=None)
    status = latest[1][1] if latest else "none"
    negative = [since for _, s, since in inquiries.values() if s in NEGATIVE]
    strikes = len(negative)
    block_since = parse(max(negative)) if negative else None
    block_until = None
    if block_since is not None and strikes < 3:
        block_until = block_since + timedelta(days=BLOCK_DAYS[strikes])
    in_force = block_since is not None and (block_until is None or now < block_until)
    if in_force:
        decision, next_action = "deny", "none"
    elif status in NEGATIVE:  # §5 as revised (RETRY_AFTER_BLOCK, on by default): the block has ended
        decision, next_action = "verify", "create_inquiry"
    else:
        decision, next_action = DECISION[status]
    user.update(
        status=status,
        inquiry_id=latest[0] if latest else None,
        decision=decision,
        next_action=next_action,
        strikes=strikes,
        _block_since=block_since,
        _block_until=block_until,
    )
