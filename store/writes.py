"""The writes of one event: Core statements built once per shape, and each write's parameters.

Applying an event ends in a handful of INSERTs and UPDATEs (store/records.py). Building each as a new
SQLAlchemy construct cost more than running it, so a statement is built once per table and shape and
cached, and each write carries only its parameters. They go through the Core connection (no ORM
bookkeeping), pipelined with the COMMIT on PostgreSQL (store/db.py `commit_pipelined`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

from sqlalchemy import Executable, Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from store.models import User


@dataclass(frozen=True)
class NewUser:
    """The id of a user created by the same writes, known only to the database: looked up by reference id."""

    reference_id: str


class Write(NamedTuple):
    """A statement and its parameters: what store/db.py `commit_pipelined` takes."""

    statement: Executable
    params: dict


_USERS = User.__table__
_NEW_USER_ID = select(_USERS.c.id).where(_USERS.c.reference_id == bindparam("new_user_reference_id")).scalar_subquery()


@cache
def _insert(table: Table, new_user: bool) -> Executable:
    # `inline`: no `RETURNING id` for inserted_primary_key, since a statement whose rows must be read
    # cannot be pipelined.
    statement = insert(table).inline()
    return statement.values(user_id=_NEW_USER_ID) if new_user else statement


@cache
def _update(table: Table, key: str, new_user: bool) -> Executable:
    statement = update(table).where(table.c[key] == bindparam(f"where_{key}"))
    return statement.values(user_id=_NEW_USER_ID) if new_user else statement


@cache
def _delete(table: Table, key: str) -> Executable:
    return delete(table).where(table.c[key] == bindparam(f"where_{key}"))


def _params(values: dict) -> tuple[dict, bool]:
    """The values as parameters; a NewUser `user_id` becomes the sub-select's parameter."""
    user = values.get("user_id")
    if not isinstance(user, NewUser):
        return values, False
    params = {name: value for name, value in values.items() if name != "user_id"}
    params["new_user_reference_id"] = user.reference_id
    return params, True


def insert_row(model, **values) -> Write:
    params, new_user = _params(values)
    return Write(_insert(model.__table__, new_user), params)


def update_rows(model, key: str, key_value, **values) -> Write:
    """UPDATE the rows whose `key` column equals `key_value`, setting `values` (at least one)."""
    params, new_user = _params(values)
    return Write(_update(model.__table__, key, new_user), {**params, f"where_{key}": key_value})


def delete_rows(model, key: str, key_value) -> Write:
    return Write(_delete(model.__table__, key), {f"where_{key}": key_value})


def run(session: Session, writes: list[Write]) -> None:
    connection = session.connection()
    for write in writes:
        connection.execute(write.statement, write.params)
