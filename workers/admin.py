"""`persona-events`: operators' commands on users' records and the failed jobs (README, "Operating").

    persona-events users [--decision D] [--blocked/--not-blocked] [--synced/--not-synced] [--limit N] [--after C]
    persona-events show REF [--json]
    persona-events lift-block REF --reason TEXT --operator NAME
    persona-events forgive REF INQUIRY_ID --reason TEXT --operator NAME
    persona-events clear-duplicate REF --reason TEXT --operator NAME
    persona-events resync REF --reason TEXT --operator NAME
    persona-events failed [--since T] [--until T] [--function NAME]
    persona-events refresh-standing
    persona-events erase REF --reason TEXT --operator NAME
    persona-events erasure ERASURE_ID [--json]

The same actions as the API (docs/contracts.md §7), on the database and Redis of the configuration; each
command says first which. `--operator` defaults to $PERSONA_EVENTS_OPERATOR. Exit status: 0 done, 1 not
found or refused (one line on stderr), 2 usage or configuration error.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime

import click
from marshmallow import ValidationError
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy.exc import OperationalError, ProgrammingError

from domain.erasure import load_erasure_request
from domain.overrides import CLEAR_DUPLICATE, FORGIVE_INQUIRY, LIFT_BLOCK, RESYNC, load_override_request
from domain.policy import DECISION_NAMES
from domain.schemas import first_error
from domain.times import iso_millis
from runtime.config import Config, load_config_or_exit
from store.db import Database
from store.erasures import load_receipt, queue_erasure, start_erasure
from store.failed_jobs import failed_jobs
from store.operator_actions import override_user
from store.overrides import UnknownInquiry
from store.queue import connect_redis
from store.records import refresh_standings
from store.sync_queue import request_sync_unless_away
from store.user_list import UserFilter, list_users
from store.user_record import load_user_record
from workers.cli import Moment, notification_requester

PROGRAM = "persona-events"
NOT_FOUND, USAGE = 1, 2


class Context:
    """What every command acts on, opened once: the configuration, the database and Redis."""

    def __init__(self) -> None:
        self.config: Config = load_config_or_exit(verifies_webhooks=False)
        self.database = Database(self.config.database_url)
        click.echo(f"{PROGRAM}: {self.config.stores}", err=True)  # stderr: stdout stays the result (--json)

    def fail(self, message: str, status: int = NOT_FOUND) -> None:
        click.echo(f"{PROGRAM}: {message}", err=True)
        sys.exit(status)


def _table(rows: list[dict], columns: tuple[str, ...]) -> None:
    widths = {c: max([len(c), *(len(_cell(row.get(c))) for row in rows)]) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(_cell(row.get(c)).ljust(widths[c]) for c in columns).rstrip())


def _cell(value: object) -> str:
    return "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


@click.group(help="Operators' commands on users' records and the failed jobs (README, \"Operating\").")
@click.pass_context
def cli(ctx: click.Context) -> None:
    ctx.obj = None  # opened by the first command that needs it, so --help needs no configuration


def _opened(ctx: click.Context) -> Context:
    if ctx.obj is None:
        ctx.obj = Context()
        ctx.call_on_close(ctx.obj.database.dispose)  # its connections closed with the command, not at exit
    return ctx.obj


@cli.command()
@click.option("--decision", type=click.Choice(sorted(DECISION_NAMES)))
@click.option("--blocked/--not-blocked", default=None)
@click.option("--synced/--not-synced", default=None)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--after", metavar="REF", help="Start after this reference id (the last one of a page).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: {users, next}.")
@click.pass_context
def users(ctx, decision, blocked, synced, limit, after, as_json) -> None:
    """Users by standing, in reference id order (as GET /users)."""
    context = _opened(ctx)
    with context.database.sessions() as session:
        found = list_users(session, UserFilter(decision, blocked, synced), after, limit + 1, datetime.now(UTC))
    page, more = found[:limit], len(found) > limit
    following = page[-1]["reference_id"] if more else None
    if as_json:
        click.echo(json.dumps({"users": page, "next": following}, indent=2))
        return
    _table(page, ("reference_id", "status", "decision", "strikes", "blocked", "blocked_until", "synced"))
    if following:
        click.echo(f"more: --after {following!r}")


@cli.command()
@click.argument("reference_id")
@click.option("--json", "as_json", is_flag=True, help="The record as GET /users/REF gives it.")
@click.pass_context
def show(ctx, reference_id, as_json) -> None:
    """One user's record: the decision and why, inquiries, overrides, history, Verisoul."""
    context = _opened(ctx)
    with context.database.sessions() as session:
        record = load_user_record(session, reference_id, datetime.now(UTC), context.config.policy)
    if record is None:
        context.fail(f"no user with reference id {reference_id!r}")
        return
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    _show(record)


def _show(record: dict) -> None:
    top = ("reference_id", "persona_account_id", "status", "inquiry_id", "decision", "next_action", "strikes")
    _table([{"field": name, "value": record[name]} for name in top], ("field", "value"))
    click.echo("\nverisoul")
    _table([{"field": k, "value": v} for k, v in record["verisoul"].items()], ("field", "value"))
    for title, columns in (
        ("inquiries", ("id", "status", "template_id", "updated_at", "forgiven")),
        ("overrides", ("at", "action", "inquiry_id", "operator", "reason")),
        ("history", ("at", "event_id", "inquiry_id", "from", "to", "outcome")),
    ):
        click.echo(f"\n{title}")
        # an override's history entry has no event: its action stands in that column
        rows = [row | {"event_id": row.get("event_id") or row.get("action")} for row in record[title]]
        _table(rows, columns)


def _override(action: str):
    """A command for one override: REF (and the inquiry, to forgive), a reason, an operator."""

    def command(ctx, reference_id, reason, operator, inquiry_id=None) -> None:
        context = _opened(ctx)
        body = {"action": action, "reason": reason, "operator": operator}
        try:
            request = load_override_request(body | ({"inquiry_id": inquiry_id} if inquiry_id else {}))
        except ValidationError as error:
            context.fail(first_error(error.messages), USAGE)
            return
        now = datetime.now(UTC)
        try:
            to_sync = override_user(context.database, reference_id, request, now, context.config.record_settings)
        except UnknownInquiry:
            context.fail(f"user {reference_id!r} has no inquiry {inquiry_id!r}")
            return
        if to_sync is None:
            context.fail(f"no user with reference id {reference_id!r}")
            return
        if to_sync:
            _queue_sync(context, reference_id)
        notification_requester(context.config, PROGRAM)(reference_id)
        with context.database.sessions() as session:
            record = load_user_record(session, reference_id, now, context.config.policy)
        assert record is not None
        click.echo(f"{reference_id}: {action} recorded; decision {record['decision']}, strikes {record['strikes']}")

    return command


def _queue_sync(context: Context, reference_id: str) -> None:
    connection = connect_redis(context.config.redis_url)
    away = request_sync_unless_away(connection, Queue(context.config.sync_queue, connection=connection), reference_id)
    if away:
        click.echo(f"{PROGRAM}: {reference_id}: sync not queued ({away}); the sweep will", err=True)
    else:
        click.echo(f"{reference_id}: Verisoul sync queued")


REASON = click.option("--reason", required=True, help="Why, for the audit trail (no personal data).")
OPERATOR = click.option("--operator", required=True, envvar="PERSONA_EVENTS_OPERATOR", help="Who.")
for name, action, summary in (
    ("lift-block", LIFT_BLOCK, "End the block in force now; the strikes stay."),
    ("clear-duplicate", CLEAR_DUPLICATE, "Confirm this is the person's main account: allow and enroll."),
    ("resync", RESYNC, "Sync Verisoul now."),
):
    cli.command(name, help=summary)(
        click.pass_context(REASON(OPERATOR(click.argument("reference_id")(_override(action)))))
    )
cli.command("forgive", help="That inquiry's failure or decline no longer counts as a strike.")(
    click.pass_context(
        REASON(OPERATOR(click.argument("reference_id")(click.argument("inquiry_id")(_override(FORGIVE_INQUIRY)))))
    )
)


@cli.command()
@click.option("--since", type=Moment(), help="Jobs that failed at or after this time.")
@click.option("--until", type=Moment(), help="Jobs that failed at or before this time.")
@click.option("--function", metavar="NAME", help="Only jobs of this function (process_event, sync_verisoul).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def failed(ctx, since, until, function, as_json) -> None:
    """Failed jobs, newest first, with when and why (requeue them with replay-event --failed)."""
    context = _opened(ctx)
    connection = connect_redis(context.config.redis_url)
    try:
        found = [
            job
            for name in context.config.queues
            for job in failed_jobs(Queue(name, connection=connection), function, None, since, until)
        ]
    except RedisError as error:
        context.fail(f"the failed registry is unreadable: {type(error).__name__}")
        return
    found.sort(key=lambda job: job.failed_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    rows = [{**asdict(job), "failed_at": job.failed_at and iso_millis(job.failed_at)} for job in found]
    if as_json:
        click.echo(json.dumps({"jobs": rows}, indent=2))
        return
    _table(rows, ("failed_at", "job_id", "function", "description", "error"))


@cli.command("refresh-standing")
@click.pass_context
def refresh_standing(ctx) -> None:
    """Every user's standing (what the users list filters on) again, after RETRY_AFTER_BLOCK changed."""
    context = _opened(ctx)
    read, changed = refresh_standings(context.database, datetime.now(UTC), context.config.record_settings)
    click.echo(f"{read} users read, {changed} changed")


@cli.command()
@click.argument("reference_id")
@REASON
@OPERATOR
@click.pass_context
def erase(ctx, reference_id, reason, operator) -> None:
    """Erase a user on the person's request (as DELETE /users/REF): redact at Persona, delete at Verisoul, delete
    every row and Redis key about them, keep a receipt. Asked again while unfinished, resumes the same erasure."""
    context = _opened(ctx)
    try:
        request = load_erasure_request({"reason": reason, "operator": operator})
    except ValidationError as error:
        context.fail(first_error(error.messages), USAGE)
        return
    started = start_erasure(context.database, reference_id, request, datetime.now(UTC))
    if started is None:
        context.fail(f"no user with reference id {reference_id!r}")
        return
    connection = connect_redis(context.config.redis_url)
    try:
        queue_erasure(connection, Queue(context.config.sync_queue, connection=connection), started.erasure_id)
    except RedisError as error:
        context.fail(f"erasure {started.erasure_id} recorded, its job not queued ({type(error).__name__}); run again")
        return
    click.echo(f"{started.erasure_id}: erasure {'queued' if started.new else 'already under way, resumed'}")
    click.echo(f"follow it: {PROGRAM} erasure {started.erasure_id}")


@cli.command("erasure")
@click.argument("erasure_id")
@click.option("--json", "as_json", is_flag=True, help="The receipt as GET /erasures/ID gives it.")
@click.pass_context
def show_erasure(ctx, erasure_id, as_json) -> None:
    """An erasure's receipt: its status, each step and what it counted, who asked and why."""
    context = _opened(ctx)
    found = load_receipt(context.database, erasure_id)
    if found is None:
        context.fail(f"no erasure {erasure_id!r}")
        return
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    top = ("erasure_id", "status", "reference_sha256", "operator", "reason", "requested_at", "finished_at")
    _table([{"field": name, "value": found[name]} for name in top], ("field", "value"))
    click.echo("\nsteps")
    _table(found["steps"], ("at", "step", "status", "detail"))
    click.echo(f"\ncounts: {json.dumps(found['counts'], sort_keys=True)}")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except (OperationalError, ProgrammingError) as error:
        reason = str(error.orig or error).strip().splitlines()[0]
        click.echo(f"{PROGRAM}: the database is unreachable or not migrated (alembic upgrade head): {reason}", err=True)
        sys.exit(USAGE)
