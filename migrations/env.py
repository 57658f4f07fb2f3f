"""Alembic environment: the URL comes from the caller (store.db.migrate) or from DATABASE_URL."""

from logging.config import fileConfig

from alembic import context

from runtime.config import database_url
from store.db import make_engine
from store.models import Base

config = context.config
if config.config_file_name is not None and not config.attributes.get("database_url"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations_online() -> None:
    engine = make_engine(config.attributes.get("database_url") or database_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
