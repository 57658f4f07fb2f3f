"""`replay-event`: re-run stored, failed or re-fetched events, and reconcile with Persona (README, "Operating").

    replay-event EVT_ID...                   re-process logged events
    replay-event --user REF                  every logged event of one user
    replay-event --since T [--until T]       logged events created (by Persona) in a time range
    replay-event --from-persona EVT_ID...    fetch events we never received from Persona's API, then process them
    replay-event --from-persona --since T    the same for every event Persona created in a time range
    replay-event --failed [--function F] [--error TEXT]   requeue jobs from RQ's failed registry
    replay-event --reconcile                 ask Persona about inquiries whose webhooks may have been lost
    replay-event --notify --user REF         re-send the user's current state to the host (a new sequence)
    replay-event --notify --since T          the same for every user the host was notified of since T

`--dry-run` shows what would change, per user, without writing anything; `--json` prints one JSON document.
Exit status: 0 all done, 1 some events, jobs or inquiries failed (one line each on stderr), 2 usage or
configuration error.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime

import click
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy.exc import OperationalError, ProgrammingError

from clients.persona import (
    InvalidEvent,
    PersonaClient,
    PersonaError,
    PersonaNotFound,
    PersonaUnavailable,
    event_from_document,
    make_persona_client,
)
from domain.events import QueuedEvent, is_queued_name
from domain.times import iso_millis, parse_time
from runtime.config import Config, load_config_or_exit
from store.db import Database
from store.failed_jobs import failed_job, failed_jobs, requeue
from store.notify_queue import request_delivery_unless_away
from store.outbox import notified_between
from store.queue import connect_redis, job_id_for
from store.records import announce_again
from store.sync_queue import request_sync_unless_away
from workers import jobs
from workers.reconcile import reconcile
from workers.replay import EventResult, Replayer, Report, events_between, events_of_user, plan_units, stored_events

PROGRAM = "replay-event"
OK, SOME_FAILED, USAGE = 0, 1, 2
FLAGS = {"json_output": "--json", "error_text": "--error"}


class Moment(click.ParamType):
    """An ISO 8601 date or time; without a zone it is UTC."""

    name = "TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(value)
        except (ValueError, OverflowError):  # OverflowError: a time whose UTC falls outside year 1..9999
            self.fail(f"{value!r} is not an ISO 8601 time such as 2024-07-08 or 2024-07-08T14:29:24Z", param, ctx)


class Output:
    """Where results go: one line per problem on stderr, and a summary or a JSON document on stdout."""

    def __init__(self, as_json: bool, stores: str):
        self.as_json, self.stores = as_json, stores
        self.problems: list[str] = []
        self.line(f"{PROGRAM}: {stores}")

    def problem(self, subject: str, reason: str) -> None:
        self.problems.append(f"{subject}: {reason}")
        click.echo(f"{PROGRAM}: {subject}: {reason}", err=True)

    def line(self, text: str) -> None:
        if not self.as_json:
            click.echo(text)

    def document(self, document: dict) -> None:
        if self.as_json:
            click.echo(json.dumps({"stores": self.stores, **document}, indent=2, default=str))

    def exit(self) -> None:
        sys.exit(SOME_FAILED if self.problems else OK)


def _flag(name: str) -> str:
    """The option a parameter comes from: `json_output` → `--json`, `from_persona` → `--from-persona`."""
    return "EVENT_ID" if name == "event_ids" else FLAGS.get(name, "--" + name.replace("_", "-"))


def _describe(params: dict) -> str:
    """The command as it was given, recorded on every replayed event."""
    parts = [PROGRAM]
    for name, value in params.items():
        if name == "event_ids":
            parts.extend(value)
        elif value is True:
            parts.append(_flag(name))
        elif value not in (None, False, ()):
            shown = iso_millis(value) if isinstance(value, datetime) else str(value)
            parts.extend([_flag(name), shown])
    return " ".join(parts)


def _check_text(params: dict) -> None:
    """Arguments that are not valid UTF-8 reach Python as lone surrogates, which no database takes."""
    for name, value in params.items():
        for text in value if isinstance(value, tuple) else (value,):
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise click.UsageError(
                        f"{_flag(name)}: {text.encode('utf-8', 'replace').decode()!r} is not valid UTF-8"
                    ) from None


def _check_usage(params: dict) -> None:
    _check_text(params)
    ranged = params["since"] is not None or params["until"] is not None
    events_ranged = ranged and not params["failed"]  # with --failed, the range is when the jobs failed
    selectors = [
        bool(params["event_ids"]),
        params["user"] is not None,
        events_ranged,
        params["failed"],
        params["reconcile"],
    ]
    if sum(selectors) != 1:
        raise click.UsageError("give exactly one of: EVENT_ID..., --user, --since/--until, --failed, --reconcile")
    if params["from_persona"] and not (params["event_ids"] or ranged):
        raise click.UsageError("--from-persona goes with EVENT_IDs or --since/--until")
    if (params["function"] or params["error_text"]) and not params["failed"]:
        raise click.UsageError("--function and --error go with --failed")
    if params["since"] and params["until"] and params["until"] < params["since"]:
        raise click.UsageError("--until is before --since")
    if params["notify"] and (params["event_ids"] or params["failed"] or params["reconcile"] or params["from_persona"]):
        raise click.UsageError("--notify goes with --user or --since/--until")
    if params["notify"] and params["dry_run"]:
        raise click.UsageError("--notify writes only a notification; there is nothing to dry-run")


def _notify(config: Config, params: dict, output: Output) -> None:
    """Announce each chosen user's current state anew, and queue its delivery (docs/contracts.md §9)."""
    if not config.host_webhook_url:
        click.echo(f"{PROGRAM}: configuration error: HOST_WEBHOOK_URL is required to notify the host", err=True)
        sys.exit(USAGE)
    database = Database(config.database_url)
    if params["user"] is not None:
        users = [params["user"]]
    else:
        with database.sessions() as session:
            users = notified_between(session, params["since"], params["until"])
    request = notification_requester(config)
    sent = {}
    for reference_id in users:
        sequence = announce_again(database, reference_id, jobs.now(), config.record_settings)
        if sequence is None:
            output.problem(reference_id, "no such user")
            continue
        request(reference_id)
        sent[reference_id] = sequence
        output.line(f"{reference_id}: sequence {sequence} queued for the host")
    database.dispose()
    output.document({"notified": sent})


def notification_requester(config: Config, program: str = PROGRAM):
    """After each committed user, queue the delivery of its notification; if Redis is down the sweep queues it
    (`program` names the command in that line)."""
    connection = connect_redis(config.redis_url)

    def request(reference_id: str) -> None:
        away = request_delivery_unless_away(connection, config, reference_id)
        if away:
            click.echo(f"{program}: {reference_id}: notification not queued ({away}); the sweep will", err=True)

    return request


def _persona(config: Config) -> PersonaClient:
    client = make_persona_client(config)
    if client is None:
        click.echo(f"{PROGRAM}: configuration error: PERSONA_API_KEY is required to ask Persona's API", err=True)
        sys.exit(USAGE)
    return client


def _sync_requester(config: Config):
    """After each committed user, queue its Verisoul sync; if Redis is down the sweep queues it later."""
    connection = connect_redis(config.redis_url)
    queue = Queue(config.sync_queue, connection=connection)

    def request(reference_id: str) -> None:
        away = request_sync_unless_away(connection, queue, reference_id)
        if away:
            click.echo(f"{PROGRAM}: {reference_id}: sync not queued ({away}); the sweep will", err=True)

    return request


def _fetch(client: PersonaClient, params: dict, output: Output) -> tuple[list[QueuedEvent], list[EventResult]]:
    """Events from Persona's API, minimised like webhooks; other event kinds are reported as ignored."""
    received_at = jobs.now()
    documents = []
    try:
        if params["event_ids"]:
            for event_id in params["event_ids"]:
                try:
                    documents.append(client.get_event(event_id))
                except PersonaNotFound:
                    output.problem(event_id, "not found at Persona (it keeps events for 30 days)")
        else:
            documents.extend(client.list_events(params["since"], params["until"]))
    except (PersonaError, PersonaUnavailable) as error:
        output.problem("persona", f"{type(error).__name__}: {error}")
        output.exit()
    events: list[QueuedEvent] = []
    skipped: list[EventResult] = []
    for document in documents:
        try:
            event = event_from_document(document, received_at)
        except InvalidEvent as error:
            output.problem(str((document.get("data") or {}).get("id", "an event")), f"not a valid event: {error}")
            continue
        if is_queued_name(event["name"]):
            events.append(event)
        else:
            skipped.append(EventResult(event["event_id"], outcome="ignored"))
    return events, skipped


def _select_stored(database: Database, config: Config, params: dict, output: Output):
    with database.sessions() as session:
        if params["event_ids"]:
            rows, missing = stored_events(session, params["event_ids"])
            if missing:  # one connection for all of them, and none when every id is stored
                events_queue = Queue(config.events_queue, connection=connect_redis(config.redis_url))
                for event_id in missing:
                    output.problem(event_id, _why_not_stored(events_queue, event_id))
        elif params["user"] is not None:
            found = events_of_user(session, params["user"])
            if found is None:
                output.problem(params["user"], "no such user")
            rows = found or []
        else:
            rows = events_between(session, params["since"], params["until"])
        return plan_units(session, rows, [])


def _why_not_stored(events_queue: Queue, event_id: str) -> str:
    """An event is stored once its job ran; one that never did may sit in the failed registry instead."""
    try:
        failed = failed_job(events_queue, job_id_for(event_id))
    except RedisError:
        failed = None  # Redis away: say what is known
    if failed is None:
        return "not stored (fetch it with --from-persona)"
    return f"not stored: its job failed ({failed.error}); --failed --dry-run lists failed jobs, --failed requeues them"


def _plan(database: Database, config: Config, params: dict, output: Output):
    if not params["from_persona"]:
        return _select_stored(database, config, params, output), []
    events, skipped = _fetch(_persona(config), params, output)
    with database.sessions() as session:
        return plan_units(session, [], events), skipped


def _run(replayer: Replayer, units, as_json: bool) -> Report:
    if as_json or not sys.stderr.isatty() or len(units) < 2:
        return replayer.run(units)
    with click.progressbar(length=len(units), label="replaying", file=sys.stderr) as bar:
        return replayer.run(units, progress=lambda unit: bar.update(1))


def _change_text(changes: dict) -> str:
    return ", ".join(f"{name} {before} → {after}" for name, (before, after) in sorted(changes.items()))


def _report(report: Report, output: Output, dry_run: bool, extra: dict | None = None) -> None:
    for result in report.failed:
        output.problem(result.event_id, result.error or "failed")
    changed = {ref: change for ref, change in report.users.items() if change.changed}
    for ref, change in sorted(changed.items()):
        output.line(f"{ref}: {_change_text(change.changed)}")
    verb = "would change" if dry_run else "changed"
    output.line(
        f"{'dry run, nothing written: ' if dry_run else ''}{len(report.events)} events of {len(report.users)} users; "
        f"{len(changed)} users {verb}; {len(report.failed)} events failed; {len(report.to_sync)} Verisoul syncs queued"
    )
    output.document(
        {
            "dry_run": dry_run,
            "events": [asdict(result) for result in report.events],
            "users": [
                {
                    "reference_id": ref,
                    "changes": {k: list(v) for k, v in change.changed.items()},
                    "before": change.before,
                    "after": change.after,
                }
                for ref, change in sorted(report.users.items())
            ],
            "syncs_queued": report.to_sync,
            "failed": len(output.problems),
            **(extra or {}),
        }
    )


def _requeue_failed(config: Config, params: dict, output: Output) -> None:
    connection = connect_redis(config.redis_url)
    try:
        jobs_found = [
            (queue, job)
            for queue in (Queue(name, connection=connection) for name in config.queues)
            for job in failed_jobs(queue, params["function"], params["error_text"], params["since"], params["until"])
        ]
    except RedisError as error:
        output.problem("redis", f"the failed registry is unreadable: {type(error).__name__}")
        output.exit()
    listed = []
    for queue, job in jobs_found:
        if not params["dry_run"]:
            try:
                requeue(queue, job.job_id)
            except Exception as error:  # RQ raises its own InvalidJobOperation, or a RedisError
                output.problem(job.job_id, f"not requeued: {type(error).__name__}: {error}")
                continue
        listed.append(job)
        when = f"failed {iso_millis(job.failed_at)}" if job.failed_at else "failed at an unknown time"
        output.line(
            f"{'would requeue' if params['dry_run'] else 'requeued'} {job.job_id} {when} {job.description}: {job.error}"
        )
    output.line(f"{len(listed)} failed jobs {'would be ' if params['dry_run'] else ''}requeued")
    output.document(
        {
            "dry_run": params["dry_run"],
            "jobs": [{**asdict(job), "failed_at": job.failed_at and iso_millis(job.failed_at)} for job in listed],
            "failed": len(output.problems),
        }
    )


def _reconcile(database: Database, config: Config, replayer: Replayer, output: Output) -> None:
    queue = Queue(config.events_queue, connection=connect_redis(config.redis_url))
    try:
        queue.connection.ping()
        failed_jobs_from: Queue | None = queue
    except RedisError:
        failed_jobs_from = None  # failed jobs cannot be listed; the other candidates still can
    result = reconcile(database, _persona(config), replayer, failed_jobs_from, config.reconcile_after)
    for inquiry_id, reason in sorted(result.errors.items()):
        output.problem(inquiry_id, f"not fetched: {reason}")
    output.line(f"{len(result.checked)} inquiries fetched from Persona")
    _report(result.report, output, replayer.dry_run, {"checked": result.checked, "not_fetched": result.errors})


@click.command(name=PROGRAM, help=__doc__.split("\n\n")[0])
@click.argument("event_ids", nargs=-1)
@click.option("--user", metavar="REF", help="Every logged event of the user with this reference id.")
@click.option(
    "--since",
    type=Moment(),
    help="Events Persona created at or after this time (with --failed: jobs that failed then).",
)
@click.option(
    "--until",
    type=Moment(),
    help="Events Persona created at or before this time (with --failed: jobs that failed then).",
)
@click.option("--from-persona", is_flag=True, help="Fetch the events from Persona's API (for events never received).")
@click.option("--failed", is_flag=True, help="Requeue jobs from RQ's failed registry.")
@click.option("--function", metavar="NAME", help="With --failed: only jobs of this function (e.g. process_event).")
@click.option("--error", "error_text", metavar="TEXT", help="With --failed: only jobs whose error contains TEXT.")
@click.option("--reconcile", is_flag=True, help="Ask Persona about inquiries whose webhooks may have been lost.")
@click.option("--notify", is_flag=True, help="Re-send the current state to the host (with --user or --since/--until).")
@click.option("--dry-run", is_flag=True, help="Show what would change, per user, and write nothing.")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON document instead of text.")
def main(**params) -> None:
    _check_usage(params)
    config = load_config_or_exit(verifies_webhooks=False)  # it needs the database, Redis, Persona's API
    output = Output(params["json_output"], config.stores)  # says first which database and Redis it acts on
    try:
        _replay(config, params, output)
    except (OperationalError, ProgrammingError) as error:  # unreachable, or not migrated: no traceback
        reason = str(error.orig or error).strip().splitlines()[0]
        output.problem("database", f"{reason} (is it reachable, and migrated: alembic upgrade head?)")
    output.exit()


def _replay(config: Config, params: dict, output: Output) -> None:
    if params["failed"]:
        return _requeue_failed(config, params, output)
    if params["notify"]:
        return _notify(config, params, output)
    database = Database(config.database_url)
    requester = None if params["dry_run"] else _sync_requester(config)
    replayer = Replayer(
        database,
        jobs.now,
        _describe(params),
        params["dry_run"],
        requester,
        config.record_settings,
        None if params["dry_run"] else notification_requester(config),
    )
    if params["reconcile"]:
        return _reconcile(database, config, replayer, output)
    units, skipped = _plan(database, config, params, output)
    report = _run(replayer, units, params["json_output"])
    report.events.extend(skipped)
    _report(report, output, params["dry_run"])


if __name__ == "__main__":
    main()
