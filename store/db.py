"""Database access shared by the web process, the workers and the CLI: engine, sessions, migrations."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import Executable, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

ROOT = Path(__file__).resolve().parent.parent
_COMMIT = text("COMMIT")
# Pipeline mode needs libpq 14 or newer (psycopg's binary wheels bundle one).
PIPELINE_SUPPORTED = psycopg.Pipeline.is_supported()


def engine_url(url: str) -> str:
    """Pick psycopg 3 for a bare `postgresql://` or `postgres://` URL (SQLAlchemy would pick psycopg2)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _prepare_sqlite(engine: Engine) -> None:
    """WAL lets readers work beside the writer; writes take the lock at BEGIN, so two workers
    serialise on the database instead of failing mid-transaction when both try to upgrade a read lock."""
    database = engine.url.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, pre_ping: bool = True) -> Engine:
    """`pre_ping` tests each connection as it leaves the pool: one round trip per checkout, which the
    workers save (they retry a statement that finds its connection dead; workers/jobs.py)."""
    engine = create_engine(engine_url(url), pool_pre_ping=pre_ping)
    if engine.dialect.name == "sqlite":
        _prepare_sqlite(engine)
    return engine


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str, pre_ping: bool = True):
        self.engine = make_engine(url, pre_ping)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # A forked child (RQ's scheduler, a gunicorn worker) must not use or close the parent's
        # connections: it drops its copy of the pool without closing them (SQLAlchemy's fork recipe).
        os.register_at_fork(after_in_child=lambda: self.engine.dispose(close=False))

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        with self.sessions.begin() as session:
            yield session

    @staticmethod
    def commit_pipelined(session: Session, statements: Iterable[tuple[Executable, dict]]) -> None:
        """Execute `statements` (each with its parameters, on the Core connection), then commit. With
        psycopg 3 on PostgreSQL they are sent in pipeline mode together with the COMMIT, so they reach the
        server in one round trip instead of one each; the server still runs them in order, in the
        transaction, and skips the rest (the COMMIT included) after an error. Only statements whose results
        are not read can be pipelined (Core INSERT, UPDATE, DELETE). Errors are raised as SQLAlchemy's
        DBAPIError, as from any other statement, and the transaction is rolled back."""
        connection = session.connection()
        driver = connection.connection.driver_connection
        if not (isinstance(driver, psycopg.Connection) and PIPELINE_SUPPORTED):
            for statement, params in statements:
                connection.execute(statement, params)
            session.commit()
            return
        try:
            with driver.pipeline():
                for statement, params in statements:
                    connection.execute(statement, params)
                # COMMIT as one more pipelined statement: psycopg's commit() would wait for it with a Sync
                # of its own, and leaving the pipeline sends another (two more round trips).
                connection.execute(_COMMIT)
        except BaseException as error:
            # The server's transaction is still open, aborted (the COMMIT was skipped): SQLAlchemy does not
            # know, and would pool the connection as it is. Errors met at the pipeline's end come from
            # psycopg directly: wrapped like SQLAlchemy wraps those of a statement.
            driver.rollback()
            if isinstance(error, psycopg.Error):
                # SQLAlchemy types the DBAPI's error and connection by protocols of its own; these are psycopg's.
                disconnect = connection.dialect.is_disconnect(error, driver, None)  # type: ignore[arg-type]
                raise DBAPIError.instance(None, None, error, psycopg.Error, connection_invalidated=disconnect) from None
            raise
        session.commit()  # the server has committed; psycopg sees no transaction and sends nothing

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str):
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url
    return config


def migrate(url: str, revision: str = "head") -> None:
    """`alembic upgrade head` on `url`."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
