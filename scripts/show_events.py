"""Print the `events` table of DATABASE_URL (default: the dev SQLite database), newest first."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from sqlalchemy import select

from domain.times import to_iso
from runtime.config import database_url, shown_url
from store.db import Database
from store.models import Event

COLUMNS = ("event_id", "name", "object_id", "occurred_at", "received_at", "outcome", "replay_count")


def _shown(value: object) -> str:
    """Times in the one form the API and the logs use (UTC, milliseconds, `Z`); SQLite keeps them zoneless."""
    return to_iso(value) if isinstance(value, datetime) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args(argv)
    url = database_url()
    print(f"events of database {shown_url(url)}")
    database = Database(url)
    with database.sessions() as session:
        events = session.scalars(select(Event).order_by(Event.id.desc()).limit(args.limit)).all()
    print("\t".join(COLUMNS))
    for event in events:
        print("\t".join(_shown(getattr(event, column)) for column in COLUMNS))
    print(f"({len(events)} shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
