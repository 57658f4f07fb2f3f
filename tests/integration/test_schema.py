"""The migrations build exactly the tables the models describe, on SQLite and PostgreSQL: a column added to a model
without its migration (or the other way round) fails here, not in production's first query."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from store.models import Base


def test_the_migrated_schema_is_the_models_schema(real_database_url):
    engine = create_engine(real_database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
