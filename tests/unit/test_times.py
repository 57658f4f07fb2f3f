"""domain/times.py: one way to parse, format and make times UTC, whatever form they arrive in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.times import MAX_YEAR, MIN_YEAR, as_utc, iso_millis, parse_rfc3339, parse_time, to_iso

PARIS_SUMMER = timezone(timedelta(hours=2))
moments = st.datetimes(
    min_value=datetime(MIN_YEAR, 1, 2), max_value=datetime(MAX_YEAR, 12, 30), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))


def test_a_zoneless_time_is_utc_and_a_zoned_one_is_converted():
    assert as_utc(datetime(2024, 7, 8, 14, 29)) == datetime(2024, 7, 8, 14, 29, tzinfo=UTC)
    converted = as_utc(datetime(2024, 7, 8, 16, 29, tzinfo=PARIS_SUMMER))
    assert (converted, converted.tzinfo) == (datetime(2024, 7, 8, 14, 29, tzinfo=UTC), UTC)
    assert as_utc(None) is None


def test_the_canonical_form_is_utc_milliseconds_with_z():
    assert iso_millis(datetime(2024, 7, 8, 16, 29, 24, 297_999, tzinfo=PARIS_SUMMER)) == "2024-07-08T14:29:24.297Z"
    assert to_iso(datetime(2024, 7, 8, 14, 29, 24)) == "2024-07-08T14:29:24.000Z"  # as SQLite returns it
    assert to_iso(None) is None


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2024-07-08", datetime(2024, 7, 8, tzinfo=UTC)),
        ("2024-07-08T14:29:24Z", datetime(2024, 7, 8, 14, 29, 24, tzinfo=UTC)),
        ("2024-07-08T16:29:24+02:00", datetime(2024, 7, 8, 14, 29, 24, tzinfo=UTC)),
        ("2024-07-08 14:29", datetime(2024, 7, 8, 14, 29, tzinfo=UTC)),
    ],
)
def test_an_operators_time_is_any_iso_8601_time_utc_when_unzoned(text, moment):
    assert parse_time(text) == moment


@given(moments)
def test_every_form_comes_back_to_the_same_moment(moment):
    text = iso_millis(moment)
    assert parse_time(text) == parse_rfc3339(text) == moment
    assert to_iso(moment.replace(tzinfo=None)) == text


def test_the_strict_parser_refuses_what_the_lenient_one_takes():
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339("2024-07-08 14:29")
    with pytest.raises(ValueError, match="years"):
        parse_rfc3339(f"{MAX_YEAR + 1}-01-01T00:00:00Z")
