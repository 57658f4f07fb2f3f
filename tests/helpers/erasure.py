"""Looking for an erased user's ids wherever the service keeps things: every table's text and JSON columns, and
every key and value of a Redis database (RQ's job data decompressed)."""

from __future__ import annotations

import json
import zlib
from typing import Any

from redis import Redis
from sqlalchemy import JSON, String, Text, create_engine, select

from store.db import engine_url
from store.models import Base


def rows_naming(database_url: str, names: set[str]) -> list[str]:
    """`table.column: value` for every text or JSON value in the database that holds one of `names`."""
    engine = create_engine(engine_url(database_url))
    found = []
    try:
        with engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                columns = [c for c in table.columns if isinstance(c.type, (String, Text, JSON))]
                for row in connection.execute(select(*columns)):
                    for column, value in zip(columns, row, strict=True):
                        text = value if isinstance(value, str) else json.dumps(value)
                        found += [f"{table.name}.{column.name}: {text[:200]}" for name in names if name in text]
    finally:
        engine.dispose()
    return found


def _texts(redis: Redis, key: bytes) -> list[bytes]:
    """Every value stored under `key`, whatever its type; a zlib-compressed value (RQ's job data) as well as
    decompressed."""
    connection: Any = redis  # redis-py's types allow str answers; a connection without decode_responses gives bytes
    values: list[bytes]
    kind = connection.type(key).decode()
    if kind == "string":
        values = [connection.get(key) or b""]
    elif kind == "hash":
        values = [part for pair in connection.hgetall(key).items() for part in pair]
    elif kind == "list":
        values = connection.lrange(key, 0, -1)
    elif kind == "set":
        values = list(connection.smembers(key))
    elif kind == "zset":
        values = [member for member, _score in connection.zrange(key, 0, -1, withscores=True)]
    elif kind == "stream":
        values = [part for _id, entry in connection.xrange(key) for pair in entry.items() for part in pair]
    else:
        values = []
    expanded = []
    for value in values:
        expanded.append(value)
        try:
            expanded.append(zlib.decompress(value))
        except zlib.error:
            pass
    return expanded


def redis_naming(connection: Redis, names: set[str]) -> list[str]:
    """`key` or `key: value` for every key of the database, or value under it, that holds one of `names`."""
    found = []
    encoded = [name.encode() for name in names]
    for key in connection.scan_iter(count=1000):
        found += [key.decode(errors="replace") for name in encoded if name in key]
        for value in _texts(connection, key):
            found += [f"{key.decode(errors='replace')}: {value[:200]!r}" for name in encoded if name in value]
    return found
