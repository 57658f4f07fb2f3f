"""A migrated database emptied in place, for a test that reuses the session's PostgreSQL database."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from store.db import engine_url
from store.models import Base


def truncate(url: str) -> None:
    """Empty every table of the migrated database at `url` (PostgreSQL), its identities restarted."""
    engine = create_engine(engine_url(url))
    with engine.begin() as connection:
        names = ", ".join(table.name for table in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
