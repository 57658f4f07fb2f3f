"""Applying one event to the user record: lock what it touches, read it, judge it, then write the result.

Reads and writes are kept apart so that an event costs few database round trips: one lock statement, the
rows the event touches read in one or two statements (as Core rows, from statements built once), and
every write collected in `Applied.writes` (store/writes.py), which `process_event` sends in one round
trip with the COMMIT (store/db.py `commit_pipelined`) and a replay runs at once. The ORM is not used here:
its objects cost more to build than these queries take to run.

Concurrency: two workers may handle events of one user at once. Each transaction first takes, in one
statement and sorted, the locks on the inquiry the event is about and on the user keys the event names
(reference id, Persona account id). On PostgreSQL the locks are transaction-scoped advisory locks, which,
unlike SELECT ... FOR UPDATE, also cover a user or an inquiry that does not exist yet (two first events of
one user must not create it twice). An inquiry event that names no reference id while its inquiry already
has one takes that user's lock in a second statement: Persona sends the reference id with every event of
an inquiry that has one, so this is rare, and a deadlock it could cause is detected by PostgreSQL and
retried like any transient error. A verification event takes no user lock: it changes no user row, and
its history row's user (the inquiry's) is held in place by the foreign key: a merge that moves the inquiry
meanwhile makes one of the two transactions fail and run again. On SQLite every write transaction begins
IMMEDIATE (store/db.py) and so already runs alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Row, String, and_, bindparam, exists, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.erasure import ERASED, digests, user_key
from domain.events import ACCOUNT_REDACTED, QueuedEvent, is_redaction
from domain.policy import InquiryFacts
from domain.state_machine import (
    APPLIED,
    IGNORED,
    Snapshot,
    StatusRun,
    Verdict,
    advance_run,
    judge_inquiry,
    judge_verification,
    status_run,
)
from domain.summary import Summary
from domain.times import as_utc, parse_time, to_iso
from runtime.config import RecordSettings
from store.db import Database
from store.event_log import event_insert, is_duplicate
from store.models import ErasedId, Event, History, Inquiry, Outbox, User, Verification
from store.outbox import announce, announce_current, announcement
from store.sync_state import summary_of, sync_state
from store.writes import NewUser, Write, delete_rows, insert_row, run, update_rows

# One statement for every key: unnest yields the (sorted) keys in order, so locks are taken in that order.
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:keys AS text[])) AS k")


def user_lock(key: str) -> str:
    """The lock name of the user keyed `key` (a reference id, or a Persona account id): whoever writes a user's row
    takes it, so events, overrides, syncs and sweeps of one user run one at a time."""
    return f"user:{key}"


def inquiry_lock(inquiry_id: str) -> str:
    return f"inquiry:{inquiry_id}"


def lock(session: Session, *names: str) -> None:
    """Advisory locks on `names` (built by `user_lock`, `inquiry_lock`), sorted, in one statement (PostgreSQL;
    SQLite's writers already run alone)."""
    if names and session.get_bind().dialect.name == "postgresql":
        session.connection().execute(_LOCK, {"keys": sorted(set(names))})


def kind_of(event: QueuedEvent) -> str | None:
    """`inquiry` or `verification` when the event is about one, `account` for an account's redaction; None for
    anything else."""
    if event["name"].startswith("inquiry.") and event["object_type"] == "inquiry":
        return "inquiry"
    if event["name"].startswith("verification.") and event.get("verification_type"):
        return "verification"
    if event["name"] == ACCOUNT_REDACTED and event["object_type"] == "account":
        return "account"
    return None


@dataclass(frozen=True)
class Applied:
    """What applying one event did: to which kind of object, the verdict, the user it concerns (its
    reference id, when the event changed an inquiry), whether that user needs a Verisoul sync, and the
    statements that write it all."""

    kind: str | None
    verdict: Verdict
    user: str | None = None
    needs_sync: bool = False
    writes: list[Write] = field(default_factory=list)
    announced: bool = False  # a `user.updated` notification was written to the outbox: deliver it after the commit

    @property
    def outcome(self) -> str:
        return self.verdict.outcome

    def write(self, session: Session) -> None:
        run(session, self.writes)


def apply_event(session: Session, event: QueuedEvent, now: datetime, settings: RecordSettings) -> Applied:
    """Lock and read what the event touches, and return the verdict with the writes that record it.

    `now` decides whether a block is in force, for the user's Verisoul sync state (store/sync_state.py
    `sync_state`, which also says what becomes of it without Verisoul)."""
    kind = kind_of(event)
    if kind == "inquiry":
        return _apply_inquiry(session, event, now, settings)
    if kind == "verification":
        return _apply_verification(session, event)
    if kind == "account":
        return _apply_account_redaction(session, event)
    verdict = Verdict(IGNORED, None, None)
    return Applied(None, verdict, writes=[_history(None, None, event, verdict)])


def snapshot_of(event: QueuedEvent) -> Snapshot:
    """The event's place in its object's order: created-at, status rank, event id."""
    return Snapshot.of(event["created_at"], event.get("status") or "", event["event_id"])


def _stored_snapshot(row: Row | None) -> Snapshot | None:
    if row is None or row.status is None or row.snapshot_at is None:
        return None
    return Snapshot(to_iso(row.snapshot_at), row.snapshot_rank, row.snapshot_event_id, row.status)


def _snapshot_columns(snapshot: Snapshot) -> dict:
    return {
        "status": snapshot.status,
        "snapshot_at": parse_time(snapshot.at),
        "snapshot_rank": snapshot.rank,
        "snapshot_event_id": snapshot.event_id,
    }


# --- inquiry events ----------------------------------------------------------------------------------


@dataclass
class _Users:
    """The users an inquiry event may resolve to, read once after the locks."""

    rows: list[Row]  # of the users table

    def by_reference(self, key: str | None) -> Row | None:
        return next((user for user in self.rows if user.reference_id == key), None) if key else None

    def linked_to(self, account_id: str) -> Row | None:
        """The user a reference id was linked to this Persona account by an earlier event."""
        linked = [u for u in self.rows if u.persona_account_id == account_id and u.reference_id != account_id]
        return min(linked, key=lambda user: user.id, default=None)


def _user_keys(reference_id: str | None, account_id: str | None) -> set[str]:
    return {key for key in (reference_id, account_id) if key}


_USERS, _INQUIRIES, _VERIFICATIONS = User.__table__, Inquiry.__table__, Verification.__table__


def _users_named(with_account: bool):
    """SQL condition: the users keyed by `keys`, and (`with_account`) those linked to `account_id`."""
    condition = _USERS.c.reference_id.in_(bindparam("keys", expanding=True))
    if not with_account:
        return condition
    account = bindparam("account_id", type_=String)
    return or_(condition, and_(_USERS.c.persona_account_id == account, _USERS.c.reference_id != account))


# Whether any id the event names was erased (docs/contracts.md §10): one row, joined to the first read after
# the locks, so the check costs no round trip and sees an erasure committed while the event waited for them.
_ERASED = ErasedId.__table__
_ERASED_FLAG = select(exists().where(_ERASED.c.sha256.in_(bindparam("digests", expanding=True))).label("erased"))


def _flagged(condition):
    """The inquiries matching `condition`, each with the erased flag; a single row of NULLs and the flag when none
    match (a LEFT JOIN from the flag's one row)."""
    flag = _ERASED_FLAG.subquery("erased_flag")
    return select(_INQUIRIES, flag.c.erased).select_from(flag.outerjoin(_INQUIRIES, condition))


# The reads, built once: Core rows (attributes named as the columns), not ORM objects, which cost more to
# make than the query to run.
@cache
def _inquiries_query(with_account: bool):
    owners = select(_USERS.c.id).where(_users_named(with_account))
    return _flagged(or_(_INQUIRIES.c.id == bindparam("inquiry_id"), _INQUIRIES.c.user_id.in_(owners)))


@cache
def _users_query(with_account: bool):
    return select(_USERS).where(_users_named(with_account))


_INQUIRY_BY_ID = _flagged(_INQUIRIES.c.id == bindparam("id"))
_VERIFICATION_BY_ID = select(_VERIFICATIONS).where(_VERIFICATIONS.c.id == bindparam("id"))


def _read_inquiries(
    session: Session, inquiry_id: str, keys: set[str], account_id: str | None, named: list[str]
) -> tuple[dict[str, Row], bool]:
    """The event's inquiry and every inquiry of the users it may resolve to (their facts decide the sync), and
    whether an id in `named` (SHA-256 digests) was erased."""
    params = {"inquiry_id": inquiry_id, "keys": sorted(keys), "account_id": account_id, "digests": named}
    rows = list(session.connection().execute(_inquiries_query(bool(account_id)), params))
    return {row.id: row for row in rows if row.id is not None}, any(row.erased for row in rows)


def _erased(kind: str) -> Applied:
    """An event naming an erased id: dropped, nothing written (not even the event log's row, which would keep
    the ids), so the user is never re-created."""
    return Applied(kind, Verdict(ERASED, None, None))


def _read_users(session: Session, keys: set[str], account_id: str | None) -> _Users:
    params = {"keys": sorted(keys), "account_id": account_id}
    return _Users(list(session.connection().execute(_users_query(bool(account_id)), params)))


def _row(session: Session, query, key: str | None) -> Row | None:
    return session.connection().execute(query, {"id": key}).first() if key else None


def _inquiry_unless_erased(session: Session, inquiry_id: str | None) -> tuple[Row | None, bool]:
    """The inquiry's row (None when unknown), and whether the inquiry was erased."""
    if not inquiry_id:
        return None, False
    row = session.connection().execute(_INQUIRY_BY_ID, {"id": inquiry_id, "digests": digests([inquiry_id])}).one()
    return (row if row.id is not None else None), bool(row.erased)


@dataclass
class _InquiryIds:
    """Ids that never change for an inquiry; the inquiry's own reference id wins over its account's."""

    reference_id: str | None
    account_id: str | None
    template_id: str | None
    created_at: datetime | None

    @classmethod
    def of(cls, stored: Row | None, event: QueuedEvent) -> _InquiryIds:
        reference_id = (
            event.get("reference_id") or (stored and stored.reference_id) or event.get("account_reference_id")
        )
        created_at = event.get("timestamps", {}).get("created_at")
        return cls(
            reference_id,
            (stored and stored.account_id) or event.get("account_id"),
            (stored and stored.template_id) or event.get("template_id"),
            (stored and as_utc(stored.inquiry_created_at)) or (parse_time(created_at) if created_at else None),
        )


def _apply_inquiry(session: Session, event: QueuedEvent, now: datetime, settings: RecordSettings) -> Applied:
    inquiry_id = event["object_id"]
    keys = _user_keys(event.get("reference_id") or event.get("account_reference_id"), event.get("account_id"))
    lock(session, inquiry_lock(inquiry_id), *(user_lock(key) for key in keys))
    owner = user_key(event.get("reference_id"), event.get("account_reference_id"), event.get("account_id"))
    named = digests([inquiry_id, owner])
    inquiries, erased = _read_inquiries(session, inquiry_id, keys, event.get("account_id"), named)
    if erased:
        return _erased("inquiry")
    stored = inquiries.get(inquiry_id)
    ids = _InquiryIds.of(stored, event)
    if missing := _user_keys(ids.reference_id, ids.account_id) - keys:
        keys |= missing  # the inquiry's own reference id, which this event did not name (see the module docstring)
        lock(session, *(user_lock(key) for key in missing))
        owner = user_key(ids.reference_id, None, ids.account_id)  # the inquiry's own
        inquiries, erased = _read_inquiries(session, inquiry_id, keys, ids.account_id, digests([owner]))
        if erased:
            return _erased("inquiry")
    users = _read_users(session, keys, ids.account_id)

    newest, incoming = _stored_snapshot(stored), snapshot_of(event)
    verdict = judge_inquiry(newest, incoming)
    columns: dict[str, Any] = {
        "reference_id": ids.reference_id,
        "account_id": ids.account_id,
        "template_id": ids.template_id,
        "inquiry_created_at": ids.created_at,
    }
    if verdict.changes_state:
        columns.update(_snapshot_columns(incoming))
    if is_redaction(event):
        columns["redacted"] = True  # whatever the verdict: a redaction is never undone
    run = _status_run(session, stored, newest, incoming)
    if run is not None:
        columns.update(status_since=parse_time(run.start.at), status_run=_run_json(run))

    plan = _resolve(users, ids)
    writes = [*plan.writes, *_inquiry_writes(inquiry_id, stored, columns, plan)]
    writes.append(_history(plan.user_ref, inquiry_id, event, verdict))
    facts = _facts(inquiries, inquiry_id, columns, plan)
    user_writes, needs, announced = _mark_sync(plan, facts, now, settings)
    return Applied("inquiry", verdict, plan.reference_id, needs, [*writes, *user_writes], announced)


def _status_run(session: Session, stored: Row | None, newest: Snapshot | None, incoming: Snapshot) -> StatusRun | None:
    """The inquiry's status run once `incoming` is known (domain/state_machine.py); computed from the event
    log when the row predates the `status_run` column, and looked up there when a late event breaks it."""
    if stored is not None and stored.status is not None and stored.status_run is None:
        return status_run([*_logged_snapshots(session, stored.id, None), incoming])
    if stored is None or not stored.status_run:
        return advance_run(None, newest, incoming, lambda _late: incoming)  # without a run it looks nothing up
    inquiry_id = stored.id

    def first_after(late: Snapshot) -> Snapshot:
        # The log may no longer hold the run's events (EVENT_RETENTION_DAYS): the newest snapshot stands in.
        return min(_logged_snapshots(session, inquiry_id, late), default=newest or incoming)

    return advance_run(_run_of(stored.status_run), newest, incoming, first_after)


def _logged_snapshots(session: Session, inquiry_id: str, after: Snapshot | None) -> list[Snapshot]:
    """The snapshots of the inquiry's applied inquiry events, those after `after` only when given."""
    query = select(Event.payload).where(Event.object_id == inquiry_id, Event.object_type == "inquiry")
    if after is not None:
        query = query.where(Event.occurred_at >= parse_time(after.at))
    snapshots = (snapshot_of(payload) for payload in session.scalars(query) if kind_of(payload) == "inquiry")
    return [s for s in snapshots if after is None or s > after]


def _run_json(run: StatusRun) -> dict:
    return {"start": list(_fields(run.start)), "preceding": list(_fields(run.preceding)) if run.preceding else None}


def _fields(snapshot: Snapshot) -> tuple:
    return snapshot.at, snapshot.rank, snapshot.event_id, snapshot.status


def _run_of(stored: dict) -> StatusRun:
    preceding = stored.get("preceding")
    return StatusRun(Snapshot(*stored["start"]), Snapshot(*preceding) if preceding else None)


@dataclass
class _UserPlan:
    """Whom the inquiry belongs to after this event, and the writes that make it so."""

    reference_id: str | None = None
    user: Row | None = None  # None: created by `writes`, or no user at all
    account_id: str | None = None
    merged: list[int] = field(default_factory=list)  # ids of stray users merged into it
    writes: list[Write] = field(default_factory=list)

    @property
    def user_ref(self) -> int | NewUser | None:
        """The user's id as a value for other rows: its id, or that of the user created here."""
        if self.reference_id is None:
            return None
        return self.user.id if self.user is not None else NewUser(self.reference_id)


def _resolve(users: _Users, ids: _InquiryIds) -> _UserPlan:
    """docs/contracts.md §4: the reference id, else the Persona account id until an event links it to one."""
    reference_id, account_id = ids.reference_id, ids.account_id
    if not reference_id and not account_id:
        return _UserPlan()
    if reference_id:
        user = users.by_reference(reference_id)
        stray = users.by_reference(account_id)
        plan = _UserPlan(reference_id, user, account_id)
        if stray is not None and (user is None or stray.id != user.id):
            plan.merged.append(stray.id)
    else:
        user = (users.linked_to(account_id) if account_id else None) or users.by_reference(account_id)
        plan = _UserPlan(user.reference_id if user else account_id, user, account_id)
    if plan.user is None:
        plan.writes.append(
            insert_row(User, reference_id=plan.reference_id, persona_account_id=account_id, created_at=_now())
        )
    elif plan.user.persona_account_id is None and account_id:
        plan.writes.append(update_rows(User, "id", plan.user.id, persona_account_id=account_id))
    for stray_id in plan.merged:
        # Records kept under a Persona account id move to the reference id the account turned out to have.
        plan.writes += [
            update_rows(Inquiry, "user_id", stray_id, user_id=plan.user_ref),
            update_rows(History, "user_id", stray_id, user_id=plan.user_ref),
            delete_rows(User, "id", stray_id),
        ]
    return plan


def _now() -> datetime:
    return datetime.now(UTC)


def _inquiry_writes(inquiry_id: str, stored: Row | None, columns: dict, plan: _UserPlan) -> list[Write]:
    owner_changes = plan.reference_id is not None and (
        stored is None or plan.user is None or stored.user_id != plan.user.id
    )
    if owner_changes:
        columns = {**columns, "user_id": plan.user_ref}
    if stored is None:
        return [insert_row(Inquiry, id=inquiry_id, **columns)]
    changed = {
        name: value for name, value in columns.items() if name == "user_id" or _differs(getattr(stored, name), value)
    }
    writes = [update_rows(Inquiry, "id", inquiry_id, **changed)] if changed else []
    if owner_changes:
        writes.append(update_rows(History, "inquiry_id", inquiry_id, user_id=plan.user_ref))
    return writes


def _differs(stored, value) -> bool:
    return (as_utc(stored) if isinstance(stored, datetime) else stored) != value


def _facts(inquiries: dict[str, Row], inquiry_id: str, columns: dict, plan: _UserPlan) -> list[InquiryFacts]:
    """The resolved user's inquiries once this event is applied: its own, its merged strays', and this one."""
    owners = set(plan.merged) | ({plan.user.id} if plan.user is not None else set())
    facts = [
        facts_of(row) for row in inquiries.values() if row.id != inquiry_id and row.user_id in owners and row.status
    ]
    stored = inquiries.get(inquiry_id)
    after: list[Any] = [columns.get(name) or (getattr(stored, name) if stored else None) for name in _FACT_COLUMNS]
    if after[0] is not None:  # the status
        facts.append(_facts_from(inquiry_id, *after))
    return facts


_FACT_COLUMNS = ("status", "inquiry_created_at", "snapshot_at", "status_since", "forgiven")


def _mark_sync(
    plan: _UserPlan, facts: list[InquiryFacts], now: datetime, settings: RecordSettings
) -> tuple[list[Write], bool, bool]:
    """The user's columns after the event: the Verisoul sync state (store/sync_state.py `sync_state`), the standing
    and what was last announced to the host, with the outbox row announcing a change (store/outbox.py); and
    whether to sync, and whether a notification was written."""
    if plan.reference_id is None:
        return [], False, False
    values, needed = sync_state(plan.user, plan.reference_id, plan.account_id, facts, now, settings.verisoul)
    summary = summary_of(plan.user, facts, now, settings.policy)
    values |= summary.standing()
    notified, outbox = announcement(plan.user, plan.reference_id, plan.account_id, summary, settings.notify)
    values |= notified
    if plan.user is not None:
        values = {name: value for name, value in values.items() if _differs(getattr(plan.user, name), value)}
    writes = [update_rows(User, "reference_id", plan.reference_id, **values)] if values else []
    return writes + ([insert_row(Outbox, **outbox)] if outbox else []), needed, outbox is not None


# --- verification events -----------------------------------------------------------------------------


def _apply_verification(session: Session, event: QueuedEvent) -> Applied:
    inquiry_id, verification_id = event.get("inquiry_id"), event["object_id"]
    lock(session, *([inquiry_lock(inquiry_id)] if inquiry_id else []), f"verification:{verification_id}")
    inquiry, erased = _inquiry_unless_erased(session, inquiry_id)
    if erased:
        return _erased("verification")
    row = _row(session, _VERIFICATION_BY_ID, verification_id)
    incoming = snapshot_of(event)
    verdict = judge_verification(_stored_snapshot(row), incoming)
    writes: list[Write] = []
    if inquiry_id and inquiry is None:
        writes.append(insert_row(Inquiry, id=inquiry_id))  # a placeholder until the inquiry's own events come
    if verdict.changes_state:
        columns = {
            "inquiry_id": (row and row.inquiry_id) or inquiry_id,
            "type": event["verification_type"],
            "checks": {check["name"]: check["status"] for check in event.get("checks", [])},
            **_snapshot_columns(incoming),
        }
        if row is None:
            writes.append(insert_row(Verification, id=verification_id, **columns))
        else:
            writes.append(update_rows(Verification, "id", verification_id, **columns))
    writes.append(_history(inquiry.user_id if inquiry else None, inquiry_id, event, verdict))
    return Applied("verification", verdict, writes=writes)


# --- an account's redaction --------------------------------------------------------------------------


def _apply_account_redaction(session: Session, event: QueuedEvent) -> Applied:
    """`account.redacted`: every inquiry of the account is marked redacted (the gate never resumes one); dropped
    when the account or its reference id was erased. `applied` when an inquiry was marked, else `ignored`."""
    account_id, reference_id = event["object_id"], event.get("reference_id")
    lock(session, *(user_lock(key) for key in _user_keys(reference_id, account_id)))
    named = digests([account_id, reference_id])
    if session.connection().execute(_ERASED_FLAG, {"digests": named}).scalar():
        return _erased("account")
    owners = select(_USERS.c.id).where(_USERS.c.persona_account_id == account_id)
    marked = session.connection().execute(
        update(Inquiry).where(or_(Inquiry.account_id == account_id, Inquiry.user_id.in_(owners))).values(redacted=True)
    )
    verdict = Verdict(APPLIED if marked.rowcount else IGNORED, None, None)
    return Applied("account", verdict, writes=[_history(None, None, event, verdict)])


def _history(user_id, inquiry_id: str | None, event: QueuedEvent, verdict: Verdict) -> Write:
    return insert_row(
        History,
        user_id=user_id,
        inquiry_id=inquiry_id,
        object_id=event["object_id"],
        event_id=event["event_id"],
        from_status=verdict.before,
        to_status=verdict.after,
        outcome=verdict.outcome,
        at=parse_time(event["created_at"]),
    )


def inquiries_of(session: Session, user: User) -> list[Inquiry]:
    """The user's inquiries that have a status (placeholders excluded)."""
    return list(
        session.scalars(
            select(Inquiry).where(Inquiry.user_id == user.id, Inquiry.status.is_not(None)).order_by(Inquiry.id)
        )
    )


def user_facts(session: Session, user: User) -> list[InquiryFacts]:
    """What the policy needs of each of the user's inquiries."""
    return [facts_of(inquiry) for inquiry in inquiries_of(session, user)]


def facts_of(inquiry: Inquiry | Row) -> InquiryFacts:
    return _facts_from(inquiry.id, *(getattr(inquiry, name) for name in _FACT_COLUMNS))


def _facts_from(
    inquiry_id: str,
    status: str,
    inquiry_created_at: datetime | None,
    snapshot_at: datetime,
    status_since: datetime | None,
    forgiven: bool | None,
) -> InquiryFacts:
    """What the policy needs of an inquiry; its snapshot's time stands in for a created-at or since not known."""
    created, since = inquiry_created_at or snapshot_at, status_since or snapshot_at
    return InquiryFacts(inquiry_id, status, to_iso(created), to_iso(since), bool(forgiven))


def mark_sync(session: Session, user: User, now: datetime, settings: RecordSettings) -> bool:
    """`sync_state` and the standing written to a user read through the ORM (replays, overrides); True when a
    sync is needed."""
    facts = user_facts(session, user)
    values, needed = sync_state(user, user.reference_id, user.persona_account_id, facts, now, settings.verisoul)
    for name, value in values.items():
        setattr(user, name, value)
    _stand(session, user, summary_of(user, facts, now, settings.policy), settings)
    return needed


def refresh_standing(session: Session, user: User, now: datetime, settings: RecordSettings) -> bool:
    """The standing again, and the host told of any change, after something other than the inquiries changed (what
    Verisoul said, the deployment's RETRY_AFTER_BLOCK); True when the standing changed."""
    return _stand(session, user, summary_of(user, user_facts(session, user), now, settings.policy), settings)


def _stand(session: Session, user: User, summary: Summary, settings: RecordSettings) -> bool:
    """The user's standing columns set from `summary`, and its change announced (store/outbox.py); True when the
    standing changed."""
    changed = False
    for name, value in summary.standing().items():
        changed |= _differs(getattr(user, name), value)
        setattr(user, name, value)
    announce(session, user, summary, settings.notify)
    return changed


def refresh_standings(database: Database, now: datetime, settings: RecordSettings, batch: int = 200) -> tuple[int, int]:
    """Every user's standing again under `policy`, a batch of users per transaction, each user under its lock (an
    event for it waits); (users read, users changed)."""
    read = changed = 0
    after = ""
    while True:
        with database.transaction() as session:
            query = select(User.reference_id).where(User.reference_id > after).order_by(User.reference_id)
            names = list(session.scalars(query.limit(batch)))
            if not names:
                return read, changed
            lock(session, *(user_lock(name) for name in names))
            for user in session.scalars(select(User).where(User.reference_id.in_(names))):
                changed += refresh_standing(session, user, now, settings)
            read, after = read + len(names), names[-1]


def announce_ended_blocks(session: Session, now: datetime, settings: RecordSettings) -> list[str]:
    """Announce the users whose block ended within the last ENDED_BLOCKS_WINDOW: the decision moved with the clock,
    and no commit marked it (store/outbox.py compares what was announced, so a user is announced once); their
    reference ids."""
    query = select(User.reference_id).where(User.block_until <= now, User.block_until > now - ENDED_BLOCKS_WINDOW)
    names = list(session.scalars(query))
    lock(session, *(user_lock(name) for name in names))
    announced = []
    for user in session.scalars(select(User).where(User.reference_id.in_(names)).order_by(User.reference_id)):
        if announce(session, user, summary_of(user, user_facts(session, user), now, settings.policy), settings.notify):
            announced.append(user.reference_id)
    return announced


def announce_again(database: Database, reference_id: str, now: datetime, settings: RecordSettings) -> int | None:
    """A notification of the user's current state, changed or not (`replay-event --notify`), under the user's lock;
    its sequence, or None for an unknown user."""
    with database.transaction() as session:
        lock(session, user_lock(reference_id))
        user = session.scalar(select(User).where(User.reference_id == reference_id))
        if user is None:
            return None
        return announce_current(session, user, summary_of(user, user_facts(session, user), now, settings.policy))


# The sweep that announces ended blocks runs every minute: a day's window rides out a scheduler down for hours.
ENDED_BLOCKS_WINDOW = timedelta(days=1)


class DuplicateEvent(Exception):
    """The event is in the events table already: applied once, nothing written now."""


def apply_and_log(database: Database, event: QueuedEvent, now: datetime, settings: RecordSettings) -> Applied:
    """Apply the event and record it with its outcome, in one transaction: the reads, then every write and the
    COMMIT in one round trip (store/db.py). Raises DuplicateEvent when the event is already recorded."""
    with database.sessions() as session:
        applied = apply_event(session, event, now, settings)
        logged = [] if applied.outcome == ERASED else [event_insert(event, now, applied.outcome)]
        try:
            Database.commit_pipelined(session, [*applied.writes, *logged])
        except IntegrityError as error:
            if is_duplicate(error):
                raise DuplicateEvent from None
            raise
    return applied
