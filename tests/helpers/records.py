"""What the stores hold, read back: each user's record through the API, every table's rows, the events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app import create_app
from runtime.config import Config
from store.db import Database
from store.models import Base, Event, User
from tests.payloads import SECRET

TOKEN = "admin-token"


def records(database_url: str, redis) -> dict[str, Any]:
    """Every user's record (the JSON document), read through GET /users as the host application reads it."""
    config = Config(
        webhook_secrets=(SECRET,), redis_url="redis://unused", database_url=database_url, admin_api_token=TOKEN
    )
    app = create_app(config, redis=redis)
    try:
        with app.extensions["database"].sessions() as session:
            refs = sorted(session.scalars(select(User.reference_id)))
        client = app.test_client()
        return {ref: client.get(f"/users/{ref}", headers={"Authorization": f"Bearer {TOKEN}"}).json for ref in refs}
    finally:
        app.extensions["database"].dispose()


def tables(database_url: str) -> dict[str, list[dict]]:
    """Every row of every table, history without its row ids, in a stable order."""
    database = Database(database_url)
    try:
        with database.engine.connect() as connection:
            found = {}
            for table in Base.metadata.sorted_tables:
                rows = [dict(row._mapping) for row in connection.execute(select(table))]
                if table.name == "history":
                    rows = [{k: v for k, v in row.items() if k != "id"} for row in rows]
                found[table.name] = sorted(rows, key=repr)
            return found
    finally:
        database.dispose()


def events_of(database_url: str) -> dict[str, Event]:
    database = Database(database_url)
    try:
        with database.sessions() as session:
            return {row.event_id: row for row in session.scalars(select(Event))}
    finally:
        database.dispose()


def without_history(found: dict[str, dict]) -> dict[str, dict]:
    return {ref: {k: v for k, v in record.items() if k != "history"} for ref, record in found.items()}
