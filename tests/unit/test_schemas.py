"""The event envelope (domain/schemas.py): what is required, and how the first error is named."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from marshmallow import ValidationError

from domain.events import minimise, normalise_keys
from domain.schemas import first_error, load_envelope, load_event
from domain.times import MAX_YEAR, MIN_YEAR
from tests.payloads import envelope


def valid() -> dict:
    return normalise_keys(envelope())


def error_of(document) -> str:
    with pytest.raises(ValidationError) as raised:
        load_envelope(document)
    return first_error(raised.value.messages)


def edited(path: tuple[str, ...], value=..., document: dict | None = None) -> dict:
    """A copy of `document` (default: a valid envelope) with `path` set to `value`, or removed."""
    doc = copy.deepcopy(document or valid())
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is ...:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def test_valid_envelope_loads():
    loaded = load_envelope(valid())
    assert loaded["data"]["id"] == "evt_test_1"
    assert loaded["data"]["attributes"]["name"] == "inquiry.approved"
    assert loaded["data"]["attributes"]["payload"]["data"] == {
        "type": "inquiry",
        "id": "inq_test_1",
        "attributes": {"status": "approved"},
        "relationships": {},
    }
    assert loaded["data"]["attributes"]["payload"]["included"] == []


REQUIRED = [
    ("data",),
    ("data", "type"),
    ("data", "id"),
    ("data", "attributes"),
    ("data", "attributes", "name"),
    ("data", "attributes", "created_at"),
    ("data", "attributes", "payload"),
    ("data", "attributes", "payload", "data"),
    ("data", "attributes", "payload", "data", "type"),
    ("data", "attributes", "payload", "data", "id"),
]


@pytest.mark.parametrize("path", REQUIRED, ids=".".join)
def test_each_required_field_missing_is_named(path):
    assert error_of(edited(path)) == f"{'.'.join(path)}: Missing data for required field."


@pytest.mark.parametrize("path", [p for p in REQUIRED if p[-1] in ("id", "name", "type")], ids=".".join)
@pytest.mark.parametrize("value", ["", None, 7, ["evt"], "x" * 256])
def test_required_strings_must_be_non_empty_strings(path, value):
    assert error_of(edited(path, value)).startswith(".".join(path) + ": ")


@pytest.mark.parametrize("event_type", ["inquiry", "Event", "events", "event "])
def test_data_type_must_be_event(event_type):
    assert error_of(edited(("data", "type"), event_type)) == "data.type: Must be equal to event."


@pytest.mark.parametrize(
    "created_at",
    [
        "2024-07-08T14:29:24.297",  # naive
        "2024-07-08",
        "yesterday",
        "",
        1720448964,
        None,
        "0001-01-01T00:00:00+01:00",  # aware, but before UTC's year 1
        "9999-12-31T23:59:59-01:00",  # aware, but after UTC's year 9999
    ],
)
def test_created_at_must_be_a_timezone_aware_datetime(created_at):
    assert error_of(edited(("data", "attributes", "created_at"), created_at)).startswith("data.attributes.created_at: ")


@pytest.mark.parametrize(
    "created_at", ["2024-07-08T14:29:24.297Z", "2024-07-08T16:29:24.297+02:00", "2024-07-08T09:29:24.297-05:00"]
)
def test_created_at_is_loaded_as_utc(created_at):
    loaded = load_envelope(edited(("data", "attributes", "created_at"), created_at))
    moment = loaded["data"]["attributes"]["created_at"]
    assert moment == datetime(2024, 7, 8, 14, 29, 24, 297000, tzinfo=UTC)
    assert moment.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("document", [[], [envelope()], "data", 1, None, True])
def test_non_object_top_level(document):
    assert error_of(document) == "body: expected a JSON object with a `data` event"


@pytest.mark.parametrize(
    "path, value",
    [
        (("data",), "evt_1"),
        (("data", "attributes"), []),
        (("data", "attributes", "payload"), "x"),
        (("data", "attributes", "payload", "data"), None),
        (("data", "attributes", "payload", "data", "attributes"), None),
        (("data", "attributes", "payload", "data", "relationships"), ["account"]),
        (("data", "attributes", "payload", "included"), {"type": "account"}),
        (("data", "attributes", "payload", "included"), ["not-an-object"]),
    ],
)
def test_wrongly_typed_parts_are_named(path, value):
    assert error_of(edited(path, value)).startswith(".".join(path))


def test_unknown_fields_are_ignored_not_rejected():
    doc = edited(("data", "brand_new"), {"x": 1})
    doc = edited(("data", "attributes", "brand_new"), 1, doc)
    loaded = load_envelope(edited(("brand_new",), True, doc))
    assert "brand_new" not in loaded and "brand_new" not in loaded["data"]


def test_object_type_and_attributes_are_free_form():
    doc = edited(("data", "attributes", "payload", "data", "type"), "report/watchlist")
    doc = edited(("data", "attributes", "payload", "data", "attributes"), {"anything": {"goes": [1]}}, doc)
    loaded = load_envelope(doc)["data"]["attributes"]["payload"]["data"]
    assert loaded["type"] == "report/watchlist" and loaded["attributes"] == {"anything": {"goes": [1]}}


@pytest.mark.parametrize(
    "messages, text",
    [
        ({"data": {"attributes": {"name": ["Missing."]}}}, "data.attributes.name: Missing."),
        ({"data": {"_schema": ["Invalid input type."]}}, "data: Invalid input type."),
        (["Top-level problem."], "body: Top-level problem."),
        (
            {"data": {"attributes": {"payload": {"included": {0: ["Not a valid mapping."]}}}}},
            "data.attributes.payload.included.0: Not a valid mapping.",
        ),
    ],
)
def test_first_error(messages, text):
    assert first_error(messages) == text


# --- the worker's rules, checked when the envelope is loaded ----------------------------------------------


@pytest.mark.parametrize("year", [MIN_YEAR - 1, MAX_YEAR + 1])
def test_event_created_at_outside_the_year_range_is_named(year):
    error = error_of(edited(("data", "attributes", "created_at"), f"{year}-06-01T00:00:00Z"))
    assert error == f"data.attributes.created_at: must be within the years {MIN_YEAR} to {MAX_YEAR}"


@pytest.mark.parametrize("year", [MIN_YEAR, MAX_YEAR])
def test_event_created_at_at_the_year_bounds_loads(year):
    loaded = load_envelope(edited(("data", "attributes", "created_at"), f"{year}-06-01T00:00:00Z"))
    assert loaded["data"]["attributes"]["created_at"].year == year


@pytest.mark.parametrize(
    "path",
    [
        ("data", "id"),
        ("data", "attributes", "name"),
        ("data", "attributes", "payload", "data", "type"),
        ("data", "attributes", "payload", "data", "id"),
    ],
)
@pytest.mark.parametrize("value", ["evt_\x00", "evt_\ud800", "evt\n1"], ids=["nul", "surrogate", "newline"])
def test_envelope_ids_with_control_characters_are_named(path, value):
    assert error_of(edited(path, value)).startswith(".".join(path) + ": must not contain control characters")


def test_what_minimisation_keeps_is_checked_by_load_envelope():
    """So every loader (the webhook, events fetched from Persona: clients/persona.py) refuses it alike."""
    doc = edited(("data", "attributes", "payload", "data", "attributes"), {"reference_id": "u_" + "x" * 300})
    assert error_of(doc) == "data.attributes.payload.data.attributes.reference_id: must be 1 to 255 characters long"


def test_an_unusable_object_created_at_is_named_by_load_envelope():
    doc = edited(("data", "attributes", "payload", "data", "attributes"), {"created_at": "2016-12-31T23:59:60Z"})
    assert error_of(doc).startswith("data.attributes.payload.data.attributes.created_at: is not a valid time")


def test_dropped_personal_data_is_not_checked_by_load_envelope():
    attributes = {"status": "approved", "name_first": "\ud800\x00", "birthdate": "x" * 1000}
    load_envelope(edited(("data", "attributes", "payload", "data", "attributes"), attributes))


# --- load_event: the webhook's loader ---------------------------------------------------------------------


def test_load_event_is_the_minimised_envelope():
    assert load_event(valid(), "hash") == minimise(load_envelope(valid()), "hash")
    assert load_event(valid(), "hash")["body_sha256"] == "hash"


@pytest.mark.parametrize(
    "document",
    [
        [],
        edited(("data", "attributes", "name")),
        edited(("data", "id"), "evt_\x00"),
        edited(("data", "attributes", "payload", "data", "attributes"), {"reference_id": "u_" + "x" * 300}),
        edited(("data", "attributes", "payload", "data", "attributes"), {"created_at": "2016-12-31T23:59:60Z"}),
    ],
    ids=["not-an-object", "missing-name", "nul-in-id", "long-reference-id", "leap-second"],
)
def test_load_event_refuses_what_load_envelope_refuses_with_the_same_message(document):
    with pytest.raises(ValidationError) as raised:
        load_event(document, "hash")
    assert first_error(raised.value.messages) == error_of(document)
