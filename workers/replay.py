"""Replaying events: rebuild the inquiries they concern from the event log, through the job's own code.

A replay does not re-apply an event on top of the current record, which a bug may have left wrong. The
inquiries the selected events concern are reset (their snapshots, verifications and history) and every
logged event of those inquiries is applied again, oldest snapshot first, with the same `apply_event`
`process_event` uses. The result depends only on the event log and the code, so replaying twice changes
nothing the second time, and a dry run (the same work in a transaction that is rolled back) shows what the
current code would change in the records.

The unit of work is a user: the selected inquiries of one user, in one transaction, so a dry run shows the
combined effect on that user's status, decision, strikes and desired Verisoul state. Events fetched from
Persona (never received, or reconciliation snapshots) are logged in the same transaction as their user's
rebuild.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, delete, false, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from domain.erasure import ERASED, user_key
from domain.events import QueuedEvent
from domain.policy import Policy
from runtime.config import DEFAULT_SETTINGS, RecordSettings
from store.db import Database
from store.erasures import erased_among
from store.event_log import inquiry_of, record_event
from store.models import Event, History, Inquiry, User, Verification
from store.records import apply_event, inquiry_lock, lock, mark_sync, snapshot_of, user_facts
from store.sync_state import summary_of

RECONCILED = "reconciled"
# A reconciliation snapshot's event name: an `inquiry.*` name, so it is applied like any inquiry event.
RECONCILED_NAME = "inquiry.reconciled"
FETCHED = "fetched"
# Big IN lists are split so SQLite's and PostgreSQL's parameter limits are never reached.
CHUNK = 500

_RESET_INQUIRY = dict.fromkeys(
    (
        "status",
        "snapshot_at",
        "snapshot_rank",
        "snapshot_event_id",
        "status_since",
        "status_run",
        "reference_id",
        "account_id",
        "template_id",
        "inquiry_created_at",
    )
)


@dataclass
class Unit:
    """The inquiries of one user to rebuild in one transaction, plus events about no inquiry."""

    key: str
    inquiry_ids: set[str] = field(default_factory=set)
    loose_object_ids: set[str] = field(default_factory=set)
    selected: set[str] = field(default_factory=set)  # event ids the command asked for
    new_events: list[QueuedEvent] = field(default_factory=list)  # fetched from Persona, not yet logged


@dataclass
class EventResult:
    event_id: str
    outcome: str | None = None
    error: str | None = None


@dataclass
class UserChange:
    reference_id: str
    before: dict | None
    after: dict | None

    @property
    def changed(self) -> dict:
        """Field → (before, after) for every field that differs; a user created or merged away shows whole."""
        before, after = self.before or {}, self.after or {}
        return {
            name: (before.get(name), after.get(name))
            for name in {*before, *after}
            if before.get(name) != after.get(name)
        }


@dataclass
class Report:
    events: list[EventResult] = field(default_factory=list)
    users: dict[str, UserChange] = field(default_factory=dict)
    to_sync: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[EventResult]:
        return [result for result in self.events if result.error]


def user_summary(session: Session, user: User, now: datetime, policy: Policy) -> dict:
    """What a replay can change about a user: the record's verdict and Verisoul's desired state."""
    summary = summary_of(user, user_facts(session, user), now, policy)
    # "target": what Verisoul should say, not what it confirmed (the record's `verisoul` part)
    return summary.verdict() | {f"verisoul_target_{name}": value for name, value in summary.verisoul_target().items()}


def chunks(values: Iterable[str]) -> Iterator[list[str]]:
    """Sorted, in IN lists short enough for every database."""
    values = sorted(values)
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def user_ids(session: Session, reference_ids: set[str]) -> set[int]:
    """The ids of the users with these reference ids (those that exist)."""
    found: set[int] = set()
    for chunk in chunks(reference_ids):
        found.update(session.scalars(select(User.id).where(User.reference_id.in_(chunk))))
    return found


def _owners(session: Session, inquiry_ids: set[str]) -> dict[str, str]:
    """Inquiry id → the reference id of the user it belongs to, for the inquiries that have one."""
    owners: dict[str, str] = {}
    for chunk in chunks(inquiry_ids):
        rows = session.execute(
            select(Inquiry.id, User.reference_id).join(User, Inquiry.user_id == User.id).where(Inquiry.id.in_(chunk))
        )
        owners.update(dict(rows.all()))
    return owners


def _user_keys(session: Session, fetched: list[QueuedEvent]) -> dict[str, str]:
    """Inquiry id → the user a never-logged inquiry will belong to, as far as the events and the users
    table say: its reference id, else the reference id its Persona account is linked to, else the account."""
    linked = {
        event["account_id"]: reference
        for event in fetched
        if event.get("account_id") and (reference := event.get("reference_id") or event.get("account_reference_id"))
    }
    accounts = sorted({account for e in fetched if (account := e.get("account_id"))} - set(linked))
    for chunk in chunks(accounts):
        rows = session.execute(
            select(User.persona_account_id, User.reference_id).where(
                User.persona_account_id.in_(chunk), User.reference_id != User.persona_account_id
            )
        )
        linked.update(dict(rows.all()))
    keys: dict[str, str] = {}
    for event in fetched:
        account = event.get("account_id")
        key = event.get("reference_id") or event.get("account_reference_id") or linked.get(account) or account
        inquiry_id = inquiry_of(event)
        if inquiry_id and key and (event.get("reference_id") or inquiry_id not in keys):
            keys[inquiry_id] = f"user:{key}"
    return keys


def plan_units(session: Session, stored: list[Event], fetched: list[QueuedEvent]) -> list[Unit]:
    """Group the selected events into per-user units: an inquiry goes to its current owner, a new
    inquiry to the user its events name, anything else alone."""
    inquiry_ids = {row.inquiry_id for row in stored if row.inquiry_id} | {i for e in fetched if (i := inquiry_of(e))}
    owners = _owners(session, inquiry_ids)
    named = _user_keys(session, fetched)
    units: dict[str, Unit] = {}

    def unit_of(inquiry_id: str | None, object_id: str) -> Unit:
        if inquiry_id is None:
            key = f"object:{object_id}"
        elif inquiry_id in owners:
            key = f"user:{owners[inquiry_id]}"
        else:
            key = named.get(inquiry_id, f"inquiry:{inquiry_id}")
        unit = units.setdefault(key, Unit(key))
        (unit.inquiry_ids if inquiry_id else unit.loose_object_ids).add(inquiry_id or object_id)
        return unit

    for row in stored:
        unit_of(row.inquiry_id, row.object_id).selected.add(row.event_id)
    for event in fetched:
        unit = unit_of(inquiry_of(event), event["object_id"])
        unit.selected.add(event["event_id"])
        unit.new_events.append(event)
    return [units[key] for key in sorted(units)]


def _naming_erased(session: Session, events: list[QueuedEvent]) -> set[str]:
    """The ids of the fetched events that name an erased inquiry, reference id or account (docs/contracts.md §10)."""
    names = {event["event_id"]: _ids_named(event) for event in events}
    erased = erased_among(session, sorted({name for named in names.values() for name in named}))
    return {event_id for event_id, named in names.items() if named & erased}


def _ids_named(event: QueuedEvent) -> set[str]:
    """The ids an event is dropped for (store/records.py does the same): its inquiry and its user's key."""
    key = user_key(event.get("reference_id"), event.get("account_reference_id"), event.get("account_id"))
    return {name for name in (inquiry_of(event), key) if name}


class _RollBack(Exception):
    """Raised inside a dry run's transaction so that it is rolled back."""


class Replayer:
    """Rebuilds units, committing each (or rolling each back in a dry run), and reports per event and user."""

    def __init__(
        self,
        database: Database,
        clock: Callable[[], datetime],
        command: str,
        dry_run: bool = False,
        request_sync: Callable[[str], object] | None = None,
        settings: RecordSettings = DEFAULT_SETTINGS,
        request_notification: Callable[[str], object] | None = None,
    ):
        self.database = database
        self.clock = clock
        self.command = command
        self.dry_run = dry_run
        self.request_sync = request_sync
        self.settings = settings
        self.request_notification = request_notification

    def run(self, units: list[Unit], progress: Callable[[Unit], None] = lambda unit: None) -> Report:
        report = Report()
        for unit in units:
            self._run_unit(unit, report)
            progress(unit)
        if not self.dry_run:
            self._drop_merged(report)
        return report

    def _drop_merged(self, report: Report) -> None:
        """A record kept under a Persona account id that a later unit merged into a reference id is gone."""
        with self.database.sessions() as session:
            existing: set[str] = set()
            for chunk in chunks(report.users):
                existing.update(session.scalars(select(User.reference_id).where(User.reference_id.in_(chunk))))
        for reference_id in set(report.users) - existing:
            change = report.users[reference_id]
            if change.before is None:
                del report.users[reference_id]
            else:
                change.after = None

    def _run_unit(self, unit: Unit, report: Report) -> None:
        try:
            with self.database.transaction() as session:
                outcomes, changes, to_sync = self._rebuild(session, unit)
                if self.dry_run:
                    raise _RollBack
        except _RollBack:
            pass
        except (DBAPIError, KeyError, TypeError, ValueError) as error:
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            report.events.extend(EventResult(event_id, error=reason) for event_id in sorted(unit.selected))
            return
        report.events.extend(
            EventResult(event_id, outcome=outcomes.get(event_id)) for event_id in sorted(unit.selected)
        )
        for change in changes:
            earlier = report.users.get(change.reference_id)
            report.users[change.reference_id] = UserChange(
                change.reference_id, earlier.before if earlier else change.before, change.after
            )
        if not self.dry_run:
            report.to_sync.extend(to_sync)
            for reference_id in to_sync:
                if self.request_sync is not None:
                    self.request_sync(reference_id)
            for change in changes:  # a delivery finds nothing to send for a user whose announced state held
                if self.request_notification is not None and self.settings.notify:
                    self.request_notification(change.reference_id)

    def _rebuild(self, session: Session, unit: Unit) -> tuple[dict[str, str], list[UserChange], list[str]]:
        now = self.clock()
        lock(session, *(inquiry_lock(inquiry_id) for inquiry_id in unit.inquiry_ids))
        dropped = _naming_erased(session, unit.new_events)
        for event in unit.new_events:
            if event["event_id"] not in dropped:  # never logged: the log's row would keep the erased ids
                record_event(session, event, now, outcome=FETCHED)
        rows = self._events(session, unit)
        touched = self._users(session, unit) | self._named_users(session, rows)
        before = self._summaries(session, touched, now)
        statuses = self._statuses(session, unit)
        self._reset(session, unit, rows)
        outcomes: dict[str, str] = dict.fromkeys(dropped, ERASED)
        reconciled, applied_to = [], set()
        # The host is told the end state (mark_sync below), never the states the rebuild passes through.
        rebuilding = dataclasses.replace(self.settings, notify=False)
        for row in sorted(rows, key=lambda row: snapshot_of(row.payload)):
            applied = apply_event(session, row.payload, now, rebuilding)
            applied.write(session)
            row.outcome = outcomes[row.event_id] = applied.outcome
            if row.name == RECONCILED_NAME and applied.verdict.changes_state:
                reconciled.append(row)
            if applied.user is not None:
                applied_to.add(applied.user)
        self._record_replay(session, unit, now)
        session.flush()
        session.expire_all()  # the rows were written with Core statements, past the ORM's identity map
        touched |= user_ids(session, applied_to)
        for row in self._changed_by_reconciliation(session, reconciled, statuses):
            row.outcome = outcomes[row.event_id] = RECONCILED
            session.execute(update(History).where(History.event_id == row.event_id).values(outcome=RECONCILED))
        users = [user for user_id in sorted(touched) if (user := session.get(User, user_id)) is not None]
        to_sync = [user.reference_id for user in users if mark_sync(session, user, now, self.settings)]
        after = self._summaries(session, {user.id for user in users}, now)
        changes = [UserChange(ref, before.get(ref), after.get(ref)) for ref in sorted({*before, *after})]
        return outcomes, changes, to_sync

    @staticmethod
    def _changed_by_reconciliation(session: Session, reconciled: list[Event], statuses: dict) -> list[Event]:
        """Reconciliation snapshots that are their inquiry's state now, when that state is new: `reconciled`
        means Persona told us something the webhooks had not."""
        found = []
        for row in reconciled:
            inquiry = session.get(Inquiry, row.object_id)
            if (
                inquiry is not None
                and inquiry.snapshot_event_id == row.event_id
                and inquiry.status != statuses.get(inquiry.id)
            ):
                found.append(row)
        return found

    @staticmethod
    def _statuses(session: Session, unit: Unit) -> dict[str, str | None]:
        rows = session.execute(select(Inquiry.id, Inquiry.status).where(Inquiry.id.in_(sorted(unit.inquiry_ids))))
        return dict(rows.all())

    @staticmethod
    def _named_users(session: Session, rows: list[Event]) -> set[int]:
        """Existing users the events name, whom the rebuild may give an inquiry: their state before counts."""
        keys = {
            key
            for row in rows
            for key in (row.payload.get("reference_id"), row.payload.get("account_reference_id"))
            if key
        }
        accounts = {account for row in rows if (account := row.payload.get("account_id"))}
        found = user_ids(session, keys)
        for chunk in chunks(accounts):
            found.update(session.scalars(select(User.id).where(User.persona_account_id.in_(chunk))))
        return found

    @staticmethod
    def _events(session: Session, unit: Unit) -> list[Event]:
        conditions: list[ColumnElement[bool]] = []
        if unit.inquiry_ids:
            conditions.append(Event.inquiry_id.in_(sorted(unit.inquiry_ids)))
        if unit.loose_object_ids:
            conditions.append(Event.inquiry_id.is_(None) & Event.object_id.in_(sorted(unit.loose_object_ids)))
        return list(session.scalars(select(Event).where(or_(*conditions))))

    @staticmethod
    def _users(session: Session, unit: Unit) -> set[int]:
        if not unit.inquiry_ids:
            return set()
        rows = session.scalars(
            select(Inquiry.user_id).where(Inquiry.id.in_(sorted(unit.inquiry_ids)), Inquiry.user_id.is_not(None))
        )
        return {user_id for user_id in rows if user_id is not None}

    def _summaries(self, session: Session, user_ids: set[int], now: datetime) -> dict[str, dict]:
        users = [user for user_id in sorted(user_ids) if (user := session.get(User, user_id)) is not None]
        return {user.reference_id: user_summary(session, user, now, self.settings.policy) for user in users}

    @staticmethod
    def _reset(session: Session, unit: Unit, rows: list[Event]) -> None:
        """Forget what the unit's events did, so applying them again starts from nothing."""
        event_ids = [row.event_id for row in rows]
        verification_ids = [row.object_id for row in rows if row.object_type.startswith("verification")]
        session.execute(
            delete(History).where(
                or_(History.inquiry_id.in_(sorted(unit.inquiry_ids)), History.event_id.in_(event_ids))
            )
        )
        session.execute(
            delete(Verification).where(
                or_(Verification.inquiry_id.in_(sorted(unit.inquiry_ids)), Verification.id.in_(verification_ids))
            )
        )
        if unit.inquiry_ids:
            session.execute(update(Inquiry).where(Inquiry.id.in_(sorted(unit.inquiry_ids))).values(**_RESET_INQUIRY))

    def _record_replay(self, session: Session, unit: Unit, now: datetime) -> None:
        session.execute(
            update(Event)
            .where(Event.event_id.in_(sorted(unit.selected)))
            .values(replay_count=Event.replay_count + 1, replayed_at=now, replayed_by=self.command[:500])
            .execution_options(synchronize_session=False)
        )


def stored_events(session: Session, event_ids: Iterable[str]) -> tuple[list[Event], list[str]]:
    """The logged events among `event_ids`, and the ids not logged."""
    wanted = list(dict.fromkeys(event_ids))
    found: dict[str, Event] = {}
    for chunk in chunks(wanted):
        found.update((row.event_id, row) for row in session.scalars(select(Event).where(Event.event_id.in_(chunk))))
    return [found[e] for e in wanted if e in found], [e for e in wanted if e not in found]


def events_of_user(session: Session, reference_id: str) -> list[Event] | None:
    """Every logged event of the inquiries the user has or that name it (a bug may have given one to another
    user); None when neither the user nor any inquiry naming it is known."""
    user = session.scalar(select(User).where(User.reference_id == reference_id))
    owned = Inquiry.user_id == user.id if user is not None else false()
    inquiry_ids = sorted(session.scalars(select(Inquiry.id).where(or_(owned, Inquiry.reference_id == reference_id))))
    if user is None and not inquiry_ids:
        return None
    rows: list[Event] = []
    for chunk in chunks(inquiry_ids):
        rows.extend(session.scalars(select(Event).where(Event.inquiry_id.in_(chunk))))
    return sorted(rows, key=lambda row: (row.occurred_at, row.event_id))


def events_between(session: Session, since: datetime | None, until: datetime | None) -> list[Event]:
    """Logged events whose Persona created-at is in [since, until]."""
    query = select(Event).order_by(Event.occurred_at, Event.event_id)
    if since is not None:
        query = query.where(Event.occurred_at >= since)
    if until is not None:
        query = query.where(Event.occurred_at <= until)
    return list(session.scalars(query))
