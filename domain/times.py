"""Time, one way throughout: aware UTC datetimes inside, `iso_millis` strings in events and records.

An event's times arrive as RFC 3339 strings (`parse_rfc3339`, strict, at the edge), travel in the queue
and the event log in one canonical form (`iso_millis`: UTC, milliseconds, `Z`), which also sorts as
the time does, and come back from the database as datetimes that SQLite leaves without a zone
(`as_utc`). Operators' times (`--since`) are any ISO 8601 time, UTC when they name no zone (`parse_time`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import overload

# Persona (founded 2018) has no earlier events; an earlier time is corrupt or hostile.
MIN_YEAR = 2000
# Far from datetime's year 9999, so the worker's date arithmetic (block expiries, windows) cannot overflow.
MAX_YEAR = 2100

# RFC 3339 `date-time` (section 5.6): full date, `T`, full time with optional fraction, `Z` or an offset.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))", re.ASCII
)


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
def as_utc(moment: datetime | None) -> datetime | None:
    """An aware UTC datetime; one without a zone is taken as UTC (SQLite returns stored times so)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso_millis(moment: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix: the form Persona uses and the order events are compared in."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@overload
def to_iso(moment: datetime) -> str: ...
@overload
def to_iso(moment: None) -> None: ...
def to_iso(moment: datetime | None) -> str | None:
    """A stored time (zoned or not) in the canonical `iso_millis` form; None stays None."""
    return iso_millis(as_utc(moment)) if moment is not None else None


def parse_time(value: str) -> datetime:
    """Any ISO 8601 time (`2024-07-08`, `...T14:29:24.297Z`) as an aware UTC datetime; no zone means UTC.

    Raises ValueError (or OverflowError for a time whose UTC falls outside years 1..9999)."""
    return as_utc(datetime.fromisoformat(value))


def parse_rfc3339(value: str) -> datetime:
    """A strict RFC 3339 time with a zone, in MIN_YEAR..MAX_YEAR, as an aware UTC datetime.

    Raises ValueError saying why not: not RFC 3339 (`NaN`, no zone, a space for `T`), no such date or
    time (month 13, a leap second: datetime has no second 60), or out of the year range."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError("must be an RFC 3339 time with a zone, e.g. 2024-07-08T14:29:24.297Z")
    year, month, day, hour, minute, second, fraction, sign, off_hours, off_minutes = match.groups()
    if int(off_hours or 0) > 23 or int(off_minutes or 0) > 59:
        raise ValueError("is not a valid time (the offset is out of range)")
    try:
        offset = timedelta(hours=int(off_hours or 0), minutes=int(off_minutes or 0)) * (-1 if sign == "-" else 1)
        micros = int((fraction or "0")[:6].ljust(6, "0"))
        y, mo, d, h, mi, sec = (int(part) for part in (year, month, day, hour, minute, second))
        moment = datetime(y, mo, d, h, mi, sec, micros, timezone(offset)).astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise ValueError(f"is not a valid time ({error})") from None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise ValueError(f"must be within the years {MIN_YEAR} to {MAX_YEAR}")
    return moment
