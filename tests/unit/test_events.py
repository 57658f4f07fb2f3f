"""Key normalisation and minimisation (domain/events.py), against every fixture in every key casing."""

from __future__ import annotations

import json
import sys
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

import pytest
from marshmallow import ValidationError

from domain import events
from domain.events import (
    MAX_TEXT_LENGTH,
    REFUSED_CATEGORIES,
    RELATIONSHIPS_READ,
    InvalidEvent,
    QueuedEvent,
    body_sha256,
    is_queued_name,
    minimise,
    normalise_envelope,
    normalise_keys,
    snake_key,
    text_problem,
    verification_kind,
)
from domain.schemas import load_envelope
from domain.times import MAX_YEAR, MIN_YEAR, iso_millis, parse_rfc3339, parse_time
from tests.payloads import CASINGS, FIXTURE_NAMES, encode, envelope, load_fixture, personal_values, recase


@pytest.mark.parametrize("key", ["reference-id", "reference_id", "referenceId"])
def test_snake_key_on_every_casing(key):
    assert snake_key(key) == "reference_id"


@pytest.mark.parametrize(
    "key, expected",
    [
        ("marked-for-review-at", "marked_for_review_at"),
        ("markedForReviewAt", "marked_for_review_at"),
        ("inquiryTemplate", "inquiry_template"),
        ("created-at-ts", "created_at_ts"),
        ("addressStreet1", "address_street1"),
        ("id", "id"),
        ("data", "data"),
    ],
)
def test_snake_key_examples(key, expected):
    assert snake_key(key) == expected


def test_normalise_keys_recases_keys_at_every_depth_and_leaves_values_alone():
    document = {
        "data": {
            "attributes": {
                "name": "inquiry.marked-for-review",
                "createdAt": "2024-07-08T14:29:24.297Z",
                "payload": {"data": {"type": "verification/government-id", "attributes": {"status": "needs_review"}}},
                "list-of-things": [{"innerKey": "Mixed-Case_Value"}, "referenceId", 3, None, True],
            }
        }
    }
    assert normalise_keys(document) == {
        "data": {
            "attributes": {
                "name": "inquiry.marked-for-review",
                "created_at": "2024-07-08T14:29:24.297Z",
                "payload": {"data": {"type": "verification/government-id", "attributes": {"status": "needs_review"}}},
                "list_of_things": [{"inner_key": "Mixed-Case_Value"}, "referenceId", 3, None, True],
            }
        }
    }


@pytest.mark.parametrize("value", [None, 1, 2.5, "referenceId", True, []])
def test_normalise_keys_passes_scalars_through(value):
    assert normalise_keys(value) == value


# --- normalise_envelope: the keys that are read, and no others --------------------------------------------


def camel_inquiry() -> dict:
    """A camel-case envelope with every part the service reads, and personal data nested below them."""
    obj_attributes = {
        "status": "approved",
        "referenceId": "u_1",
        "createdAt": "2024-07-08T14:28:41.000Z",
        "nameFirst": "Jane",
        "fields": {"nameFirst": {"type": "string", "value": "Jane"}},
        "checks": [{"name": "id_a", "status": "passed", "reasonCodes": [{"someKey": 1}]}, ["notACheck"]],
    }
    relationships = {
        "account": {"data": {"type": "account", "id": "act_1"}},
        "inquiryTemplate": {"data": {"type": "inquiry-template", "id": "itmpl_1", "extraInfo": {"deepKey": 1}}},
        "sessions": {"data": [{"type": "inquiry-session", "id": "iqse_1"}], "linkInfo": {"someKey": 1}},
    }
    included = [
        {"type": "account", "id": "act_1", "attributes": {"referenceId": "u_1", "nameFirst": {"innerKey": 1}}},
        {"type": "selfie", "id": "slf_1", "attributes": {"photoUrls": {"centerPhoto": "https://..."}}},
    ]
    obj = {"type": "inquiry", "id": "inq_1", "attributes": obj_attributes, "relationships": relationships}
    payload = {"data": obj, "included": included, "extraPart": {"someKey": 1}}
    attributes = {"name": "inquiry.approved", "createdAt": "2024-07-08T14:29:24.297Z", "payload": payload}
    return {"data": {"type": "event", "id": "evt_1", "attributes": attributes}, "metaData": {"someKey": 1}}


def test_normalise_envelope_recases_the_keys_that_are_read_and_leaves_the_rest_as_sent():
    obj_attributes = {
        "status": "approved",
        "reference_id": "u_1",
        "created_at": "2024-07-08T14:28:41.000Z",
        "name_first": "Jane",
        "fields": {"nameFirst": {"type": "string", "value": "Jane"}},  # personal data: not walked
        "checks": [{"name": "id_a", "status": "passed", "reason_codes": [{"someKey": 1}]}, ["notACheck"]],
    }
    relationships = {
        "account": {"data": {"type": "account", "id": "act_1"}},
        "inquiry_template": {"data": {"type": "inquiry-template", "id": "itmpl_1", "extra_info": {"deepKey": 1}}},
        "sessions": {"data": [{"type": "inquiry-session", "id": "iqse_1"}], "linkInfo": {"someKey": 1}},  # not read
    }
    included = [
        {"type": "account", "id": "act_1", "attributes": {"reference_id": "u_1", "name_first": {"innerKey": 1}}},
        {"type": "selfie", "id": "slf_1", "attributes": {"photo_urls": {"centerPhoto": "https://..."}}},
    ]
    obj = {"type": "inquiry", "id": "inq_1", "attributes": obj_attributes, "relationships": relationships}
    payload = {"data": obj, "included": included, "extra_part": {"someKey": 1}}
    attributes = {"name": "inquiry.approved", "created_at": "2024-07-08T14:29:24.297Z", "payload": payload}
    expected = {"data": {"type": "event", "id": "evt_1", "attributes": attributes}, "meta_data": {"someKey": 1}}
    document = camel_inquiry()
    assert normalise_envelope(document) == expected
    assert document == camel_inquiry()  # the parsed body is not changed in place


def test_normalise_envelope_gives_validation_and_minimisation_what_normalise_keys_gives():
    document = camel_inquiry()
    full, read = normalise_keys(document), normalise_envelope(document)
    assert minimise(load_envelope(read), "hash") == minimise(load_envelope(full), "hash")
    assert minimise(load_envelope(read), "hash")["account_reference_id"] == "u_1"


@pytest.mark.parametrize("casing", CASINGS)
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_normalise_envelope_minimises_every_fixture_as_normalise_keys_does(name, casing):
    document = recase(load_fixture(name), casing)
    read = minimise(load_envelope(normalise_envelope(document)), "hash")
    full = minimise(load_envelope(normalise_keys(document)), "hash")
    assert read == full == {**EXPECTED[name], "body_sha256": "hash"}


def test_every_relationship_minimise_reads_is_recased_by_normalise_envelope(monkeypatch):
    read = []
    related_id = events._related_id

    def recording(obj, path, *names):
        read.extend(names)
        return related_id(obj, path, *names)

    monkeypatch.setattr(events, "_related_id", recording)
    minimise(inquiry_with_everything(), "hash")
    assert set(read) == set(RELATIONSHIPS_READ)


@pytest.mark.parametrize("document", [[{"someKey": 1}], "data", 7, None, {"data": ["notAnEvent"]}])
def test_normalise_envelope_leaves_what_is_not_an_envelope_to_validation(document):
    assert normalise_envelope(document) == document


OBJ_ATTRIBUTES = ("data", "attributes", "payload", "data", "attributes")
# Two keys of one dict that re-case alike, where the service reads them, and the event field they become.
COLLISIONS = [
    (OBJ_ATTRIBUTES, "reference-id", "referenceId", "reference_id"),
    (OBJ_ATTRIBUTES, "referenceId", "reference_id", "reference_id"),
    (OBJ_ATTRIBUTES, "reference_id", "reference-id", "reference_id"),
    (OBJ_ATTRIBUTES, "reference-id", "REFERENCE-ID", "reference_id"),
    (("data", "attributes", "payload", "data"), "id", "ID", "object_id"),
    (("data",), "Id", "id", "event_id"),
]


@pytest.mark.parametrize("path, first, second, field", COLLISIONS)
@pytest.mark.parametrize("normalise", [normalise_keys, normalise_envelope])
def test_of_two_keys_that_recase_alike_the_later_one_wins(normalise, path, first, second, field):
    """Today's behaviour (a dict comprehension over the keys in body order), kept and pinned."""
    document = envelope(attributes={"status": "approved"})
    parent = document
    for key in path:
        parent = parent[key]
    for key in (first, second):
        parent.pop(key, None)
    parent.update({first: "v_first", second: "v_second"})
    assert minimise(load_envelope(normalise(document)), "hash")[field] == "v_second"


@pytest.mark.parametrize(
    "name, queued",
    [
        ("inquiry.approved", True),
        ("inquiry.marked-for-review", True),
        ("inquiry.something-new", True),
        ("verification.passed", True),
        ("verification.requires-retry", True),
        ("account.created", False),
        ("report/watchlist.matched", False),
        ("case.created", False),
        ("inquiry", False),
        ("inquiry-session.started", False),
        ("verificationx.passed", False),
        ("Inquiry.approved", False),
        ("", False),
    ],
)
def test_is_queued_name(name, queued):
    assert is_queued_name(name) is queued


@pytest.mark.parametrize(
    "object_type, kind",
    [
        ("verification/government-id", "government-id"),
        ("verification/selfie", "selfie"),
        ("verification/database", "database"),
        ("inquiry", None),
        ("verification", None),
        ("verification/", None),
        ("document/government-id", None),
    ],
)
def test_verification_kind(object_type, kind):
    assert verification_kind(object_type) == kind


@pytest.mark.parametrize(
    "moment, text",
    [
        (datetime(2024, 7, 8, 14, 29, 24, 297000, tzinfo=UTC), "2024-07-08T14:29:24.297Z"),
        (datetime(2024, 7, 8, 16, 29, 24, 297999, tzinfo=timezone(timedelta(hours=2))), "2024-07-08T14:29:24.297Z"),
        (datetime(2024, 7, 8, 14, 29, 24, tzinfo=UTC), "2024-07-08T14:29:24.000Z"),
    ],
)
def test_iso_millis_is_utc_with_milliseconds(moment, text):
    assert iso_millis(moment) == text


def test_body_sha256():
    assert body_sha256(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --- minimisation of the fixtures ---------------------------------------------------------------------

EXPECTED = {
    "sandbox_inquiry_approved.json": {
        "event_id": "evt_pSXHZmSpjEBpstmv4xwKR9m1Q3yX",
        "name": "inquiry.approved",
        "created_at": "2024-07-08T14:29:24.297Z",
        "object_type": "inquiry",
        "object_id": "inq_AGa6mNLe7BfgZBopxR86A7WRdmUr",
        "status": "approved",
        "reference_id": "user_1",
        "account_id": "act_wU2yVJZ7gCTQiDHnKQksWSMUy8fv",
        "account_reference_id": "referenceId1",
        "template_id": "itmpl_nTqLfn7VChH2RxrAmL8AGVZovQEP",
        "inquiry_id": None,
        "verification_type": None,
        "checks": [],
        "timestamps": {
            "created_at": "2024-07-08T14:28:41.000Z",
            "started_at": "2024-07-08T14:29:00.000Z",
            "completed_at": "2024-07-08T14:29:21.000Z",
            "decisioned_at": "2024-07-08T14:29:24.000Z",
            "updated_at": "2024-07-08T14:29:24.000Z",
        },
    },
    "docs_inquiry_completed.json": {
        "event_id": "evt_o9byQRbjygu76Jbtea9wuJ1boP7a",
        "name": "inquiry.completed",
        "created_at": "2023-03-30T19:07:41.732Z",
        "object_type": "inquiry",
        "object_id": "inq_zEx4jL84ShbUyuwX6AzPSqt6",
        "status": "completed",
        "reference_id": "abc-123",
        "account_id": "act_n2uq9eKMboaCQzu9ALWYcVdN",
        "account_reference_id": None,  # `included` holds no account
        "template_id": "itmpl_p8ANAJy9iqadm2buF2xcVgqH",  # `template` is null; `inquiry-template` is used
        "inquiry_id": None,
        "verification_type": None,
        "checks": [],
        "timestamps": {
            "created_at": "2023-03-29T19:06:45.000Z",
            "started_at": "2023-03-30T19:07:01.000Z",
            "completed_at": "2023-03-30T19:07:41.000Z",
            "updated_at": "2023-03-30T19:07:41.000Z",
        },
    },
    "docs_verification_passed.json": {
        "event_id": "evt_Qk3xR8mV2pLw9ZtYh7NcD4sF1aB6",
        "name": "verification.passed",
        "created_at": "2024-03-20T21:22:31.412Z",
        "object_type": "verification/government-id",
        "object_id": "ver_sRmjdy6qBFmLd52Rs3wQugNRERnR",
        "status": "passed",
        "reference_id": None,
        "account_id": None,
        "account_reference_id": None,
        "template_id": "itmpl_nTqLfn7VChH2RxrAmL8AGVZovQEP",
        "inquiry_id": "inq_AGa6mNLe7BfgZBopxR86A7WRdmUr",
        "verification_type": "government-id",
        "checks": [
            {"name": "id_expired_detection", "status": "passed"},
            {"name": "id_portrait_detection", "status": "passed"},
            {"name": "id_tamper_detection", "status": "passed"},
            {"name": "id_aamva_database_lookup", "status": "not_applicable"},
        ],
        "timestamps": {
            "created_at": "2024-03-20T21:22:25.000Z",
            "submitted_at": "2024-03-20T21:22:25.000Z",
            "completed_at": "2024-03-20T21:22:31.000Z",
        },
    },
    "docs_inquiry_approved_overview.json": {
        "event_id": "evt_XGuYWp7WuDzNxie5z16s7sGJ",
        "name": "inquiry.approved",
        "created_at": "2019-09-09T22:46:27.598Z",
        "object_type": "inquiry",
        "object_id": "inq_2CVZ4HyVg7qaboXz2PUHknAn",
        "status": "approved",
        "reference_id": None,
        "account_id": None,
        "account_reference_id": None,
        "template_id": "blu_biqYXr3aNfHuLeXUdJUNFNET",  # legacy `template` relationship
        "inquiry_id": None,
        "verification_type": None,
        "checks": [],
        "timestamps": {"created_at": "2019-09-09T22:40:56.000Z", "completed_at": "2019-09-09T22:44:51.000Z"},
    },
}


def minimised(name: str, casing: str) -> QueuedEvent:
    body = encode(recase(load_fixture(name), casing))
    return minimise(load_envelope(normalise_keys(json.loads(body))), body_sha256(body))


def test_expectations_cover_every_fixture():
    assert set(EXPECTED) == set(FIXTURE_NAMES)


@pytest.mark.parametrize("casing", CASINGS)
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_minimised_fixture(name, casing):
    event = minimised(name, casing)
    body = encode(recase(load_fixture(name), casing))
    assert event == {**EXPECTED[name], "body_sha256": body_sha256(body)}


@pytest.mark.parametrize("casing", ["snake", "camel"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_minimised_event_is_the_same_in_every_casing(name, casing):
    kebab, other = minimised(name, "kebab"), minimised(name, casing)
    assert kebab.pop("body_sha256") != other.pop("body_sha256")  # the bytes differ...
    assert other == kebab  # ...the event does not


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_personal_values_are_found_in_the_fixture(name):
    """The leak check below is only as good as the values it looks for."""
    values = personal_values(load_fixture(name))
    assert values and all(value in json.dumps(load_fixture(name)) for value in values)


def test_personal_values_include_the_obvious_ones():
    sandbox = personal_values(load_fixture("sandbox_inquiry_approved.json"))
    assert {"ALEXANDER J", "1977-07-17", "I1234562", "87.157.115.169", "600 CALIFORNIA STREET"} <= sandbox
    assert "https://files.withpersona.com/selfie_photo.jpg?access_token=RETRACTED" in sandbox
    assert {"jane@doe.com", "127.0.0.1", "37.7688"} <= personal_values(load_fixture("docs_inquiry_completed.json"))


@pytest.mark.parametrize("casing", CASINGS)
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_minimised_event_holds_no_personal_value(name, casing):
    text = json.dumps(minimised(name, casing))
    assert [value for value in personal_values(load_fixture(name)) if value in text] == []


# --- minimisation edge cases --------------------------------------------------------------------------


def minimise_doc(document: dict) -> QueuedEvent:
    return minimise(load_envelope(normalise_keys(document)), "hash")


def test_new_attributes_are_dropped_not_copied():
    doc = envelope(attributes={"status": "approved", "brand-new-personal-thing": "secret value", "name-first": "X"})
    assert "secret value" not in json.dumps(minimise_doc(doc))


def test_checks_keep_name_and_status_only_and_skip_unusable_entries():
    checks = [
        {"name": "id_a", "status": "failed", "reasons": ["mismatch"], "metadata": {"name-first": "JANE"}},
        {"name": "id_b"},
        {"status": "passed"},
        "not-a-check",
        {"name": "", "status": "passed"},
    ]
    event = minimise_doc(envelope(object_type="verification/selfie", attributes={"status": "failed", "checks": checks}))
    assert event["checks"] == [{"name": "id_a", "status": "failed"}, {"name": "id_b", "status": "unknown"}]


@pytest.mark.parametrize("checks", [None, "passed", {"name": "id_a"}])
def test_checks_that_are_not_a_list_are_ignored(checks):
    assert minimise_doc(envelope(attributes={"checks": checks}))["checks"] == []


def test_account_reference_id_only_from_the_matching_included_account():
    doc = envelope()
    payload = doc["data"]["attributes"]["payload"]
    payload["data"]["relationships"] = {"account": {"data": {"type": "account", "id": "act_1"}}}
    payload["included"] = [
        {"type": "account", "id": "act_other", "attributes": {"reference-id": "wrong"}},
        {"type": "inquiry-session", "id": "act_1", "attributes": {"reference-id": "wrong too"}},
        {"type": "account", "id": "act_1", "attributes": {"reference-id": "u_42"}},
    ]
    event = minimise_doc(doc)
    assert (event["account_id"], event["account_reference_id"]) == ("act_1", "u_42")


@pytest.mark.parametrize(
    "relationships",
    [{}, {"account": None}, {"account": {"data": None}}, {"account": {"data": []}}, {"account": {"data": {"id": 7}}}],
)
def test_missing_or_odd_relationships_give_none(relationships):
    doc = envelope()
    doc["data"]["attributes"]["payload"]["data"]["relationships"] = relationships
    assert minimise_doc(doc)["account_id"] is None


def test_non_string_attribute_values_are_not_copied():
    """Except a reference id, which decides whose record changes (below)."""
    attributes = {"status": {"nested": "x"}, "created-at": ["2024"], "completed-at": ""}
    event = minimise_doc(envelope(attributes=attributes))
    assert (event["status"], event["reference_id"], event["timestamps"]) == (None, None, {})


def test_minimised_event_is_json_safe():
    event = minimise_doc(load_fixture("sandbox_inquiry_approved.json"))
    assert json.loads(json.dumps(event)) == event


# --- the rules for what is kept: timestamps ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, canonical",
    [
        ("2024-07-08T14:29:24.297Z", "2024-07-08T14:29:24.297Z"),
        ("2024-07-08T14:29:24Z", "2024-07-08T14:29:24.000Z"),
        ("2024-07-08t14:29:24z", "2024-07-08T14:29:24.000Z"),  # RFC 3339 allows lower case
        ("2024-07-08T16:29:24.5+02:00", "2024-07-08T14:29:24.500Z"),
        ("2024-07-08T09:29:24.2979999-05:00", "2024-07-08T14:29:24.297Z"),  # more digits than datetime keeps
        ("2024-07-09T00:30:00+10:30", "2024-07-08T14:00:00.000Z"),
        (f"{MIN_YEAR}-01-01T00:00:00Z", f"{MIN_YEAR}-01-01T00:00:00.000Z"),
        (f"{MAX_YEAR}-12-31T23:59:59.999Z", f"{MAX_YEAR}-12-31T23:59:59.999Z"),
    ],
)
def test_rfc3339_times_are_read_as_utc_and_kept_in_canonical_form(value, canonical):
    assert iso_millis(parse_rfc3339(value)) == canonical


@pytest.mark.parametrize(
    "value",
    [
        "2016-12-31T23:59:60Z",  # a leap second: RFC 3339 has them, datetime (and so the worker) does not
        "NaN",
        "2024-13-01T00:00:00Z",  # month 13
        "2024-02-30T00:00:00Z",
        "2024-07-08T24:00:00Z",
        "0001-01-01T00:30:00+01:00",  # before UTC's year 1: OverflowError in astimezone
        "9999-12-31T23:30:00-01:00",
        f"{MIN_YEAR - 1}-12-31T23:59:59Z",
        f"{MAX_YEAR + 1}-01-01T00:00:00Z",
        "2024-07-08T14:29:24",  # no zone
        "2024-07-08 14:29:24Z",  # a space, not T
        "2024-07-08T14:29Z",
        "2024-07-08",
        "20240708T142924Z",  # ISO 8601 basic format: fromisoformat takes it, RFC 3339 does not
        "2024-07-08T14:29:24.Z",
        "2024-07-08T14:29:24+0200",
        "2024-07-08T14:29:24+24:00",
        "2024-07-08T14:29:24+02:60",
        "\u0662\u0660\u0662\u0664-07-08T14:29:24Z",  # Arabic-Indic digits match \\d without re.ASCII
        " 2024-07-08T14:29:24Z",
        "2024-07-08T14:29:24Z\n",
    ],
)
def test_times_the_worker_cannot_parse_or_store_are_refused(value):
    with pytest.raises(ValueError):
        parse_rfc3339(value)


@pytest.mark.parametrize(
    "value", ["2024-07-08T14:29:24.297Z", "2024-07-08T16:29:24.297999+02:00", "2100-12-31T23:59:59Z"]
)
def test_the_worker_parses_the_canonical_form_back_to_the_same_millisecond(value):
    moment = parse_rfc3339(value)
    assert parse_time(iso_millis(moment)) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# --- the rules for what is kept: text ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "evt_1",
        "x" * MAX_TEXT_LENGTH,
        "u_\U0001f600",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # an emoji ZWJ sequence (U+200D is Cf)
        "user with spaces / and ? and #",
        "\u00e9\u4e2d\u0627",
    ],
)
def test_text_the_database_stores_is_kept(value):
    assert text_problem(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * (MAX_TEXT_LENGTH + 1),
        "evt_\x00",
        "evt_\n",
        "evt_\x1b[31m",
        "evt_\x7f",
        "evt_\x85",
        "evt_\ud800",
        "\udc00",
    ],
    ids=["empty", "too-long", "nul", "newline", "escape", "del", "c1-nel", "high-surrogate", "low-surrogate"],
)
def test_text_the_database_or_the_logs_cannot_take_is_refused(value):
    assert text_problem(value)


def test_exactly_the_refused_categories_are_refused_and_the_first_such_character_named():
    """text_problem searches a character class; the rule is the categories (Cc, Cs): same answer for every
    code point, in this Python's Unicode."""
    for code_point in range(sys.maxunicode + 1):
        char = chr(code_point)
        problem = text_problem(f"id_{char}_\x00")
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            assert problem == f"must not contain control characters or lone surrogates (U+{code_point:04X})"
        else:
            assert problem == "must not contain control characters or lone surrogates (U+0000)", hex(code_point)


# --- minimise: what is kept is checked, what is dropped is not ---------------------------------------------

OBJECT = ("data", "attributes", "payload", "data")


def set_at(document: dict, path: tuple, value) -> dict:
    """`document` (changed in place) with `path` set to `value`, creating dicts on the way."""
    parent = document
    for key in path[:-1]:
        parent = parent.setdefault(key, {}) if isinstance(key, str) else parent[key]
    parent[path[-1]] = value
    return document


def inquiry_with_everything() -> dict:
    """An envelope (snake case) in which every field minimise keeps is present."""
    doc = normalise_keys(
        envelope(attributes={"status": "approved", "reference-id": "u_1", "created-at": "2024-07-08T14:28:41.000Z"})
    )
    obj = doc["data"]["attributes"]["payload"]["data"]
    obj["relationships"] = {
        "account": {"data": {"type": "account", "id": "act_1"}},
        "inquiry_template": {"data": {"type": "inquiry-template", "id": "itmpl_1"}},
        "template": {"data": {"type": "template", "id": "tmpl_1"}},
        "inquiry": {"data": {"type": "inquiry", "id": "inq_1"}},
    }
    obj["attributes"]["checks"] = [{"name": "id_a", "status": "passed"}]
    doc["data"]["attributes"]["payload"]["included"] = [
        {"type": "account", "id": "act_1", "attributes": {"reference_id": "u_1"}}
    ]
    doc["data"]["attributes"]["created_at"] = datetime(2024, 7, 8, 14, 29, 24, 297000, tzinfo=UTC)  # as loaded
    return doc


KEPT_FIELDS = [
    (("data", "id"), "data.id"),
    (("data", "attributes", "name"), "data.attributes.name"),
    ((*OBJECT, "type"), "data.attributes.payload.data.type"),
    ((*OBJECT, "id"), "data.attributes.payload.data.id"),
    ((*OBJECT, "attributes", "status"), "data.attributes.payload.data.attributes.status"),
    ((*OBJECT, "attributes", "reference_id"), "data.attributes.payload.data.attributes.reference_id"),
    ((*OBJECT, "relationships", "account", "data", "id"), "data.attributes.payload.data.relationships.account.data.id"),
    (
        (*OBJECT, "relationships", "inquiry_template", "data", "id"),
        "data.attributes.payload.data.relationships.inquiry_template.data.id",
    ),
    ((*OBJECT, "relationships", "inquiry", "data", "id"), "data.attributes.payload.data.relationships.inquiry.data.id"),
    ((*OBJECT, "attributes", "checks", 0, "name"), "data.attributes.payload.data.attributes.checks.0.name"),
    ((*OBJECT, "attributes", "checks", 0, "status"), "data.attributes.payload.data.attributes.checks.0.status"),
    (
        ("data", "attributes", "payload", "included", 0, "attributes", "reference_id"),
        "data.attributes.payload.included.0.attributes.reference_id",
    ),
]


@pytest.mark.parametrize("path, field", KEPT_FIELDS, ids=[field for _, field in KEPT_FIELDS])
@pytest.mark.parametrize(
    "bad", ["x" * (MAX_TEXT_LENGTH + 1), "id_\x00", "id_\ud800", "id\r\n"], ids=["long", "nul", "surrogate", "crlf"]
)
def test_a_kept_string_breaking_the_rule_is_refused_naming_its_field(path, field, bad):
    doc = set_at(inquiry_with_everything(), path, bad)
    if path[-1] == "id" and "account" in path:  # the included account is matched by this id
        doc["data"]["attributes"]["payload"]["included"][0]["id"] = bad
    with pytest.raises(InvalidEvent) as raised:
        minimise(doc, "hash")
    assert raised.value.field == field
    assert str(raised.value).startswith(field + ": ")


def test_every_kept_field_is_named_by_one_rule():
    """The list above covers every string minimise copies from the envelope."""
    event = minimise(inquiry_with_everything(), "hash")
    copied = {k for k, v in event.items() if isinstance(v, str)} - {"created_at", "body_sha256", "verification_type"}
    assert copied == {
        "event_id",
        "name",
        "object_type",
        "object_id",
        "status",
        "reference_id",
        "account_id",
        "account_reference_id",
        "template_id",
        "inquiry_id",
    }
    assert len(KEPT_FIELDS) == len(copied) + 2  # + a check's name and status


def test_the_legacy_template_relationship_is_checked_when_it_is_the_one_kept():
    doc = inquiry_with_everything()
    del doc["data"]["attributes"]["payload"]["data"]["relationships"]["inquiry_template"]
    set_at(doc, (*OBJECT, "relationships", "template", "data", "id"), "tmpl_\x00")
    with pytest.raises(InvalidEvent, match=r"^data\.attributes\.payload\.data\.relationships\.template\.data\.id: "):
        minimise(doc, "hash")


@pytest.mark.parametrize("bad", ["\ud800", "\x00", "x" * 1000, "2024-13-01"])
def test_what_is_dropped_is_never_checked(bad):
    """Personal data, unmatched included objects, relationships not kept: a lone surrogate, a NUL or an
    over-long value there is no reason to refuse an authentic event."""
    doc = inquiry_with_everything()
    obj = doc["data"]["attributes"]["payload"]["data"]
    obj["attributes"].update({"name_first": bad, "birthdate": bad, "fields": {"name_last": {"value": bad}}})
    obj["attributes"]["checks"][0]["reasons"] = [bad]
    obj["relationships"]["sessions"] = {"data": [{"type": "inquiry-session", "id": bad}]}
    doc["data"]["attributes"]["payload"]["included"].append(
        {"type": "account", "id": "act_other", "attributes": {"reference_id": bad}}
    )
    doc["data"]["attributes"]["payload"]["included"].append(
        {"type": "selfie", "id": bad, "attributes": {"photo_url": bad}}
    )
    event = minimise(doc, "hash")
    assert bad not in json.dumps(event, ensure_ascii=False)


def test_the_template_relationship_not_kept_is_not_checked():
    doc = inquiry_with_everything()
    set_at(doc, (*OBJECT, "relationships", "template", "data", "id"), "tmpl_\x00")  # inquiry_template wins
    assert minimise(doc, "hash")["template_id"] == "itmpl_1"


def test_unknown_statuses_are_kept_for_the_log_under_the_same_rule():
    """The worker ignores statuses it does not know (domain/state_machine.py) and stores them only in
    the event's JSON payload; Persona adds statuses over time, so any status passing the text rule is kept."""
    doc = set_at(inquiry_with_everything(), (*OBJECT, "attributes", "status"), "brand_new_status")
    assert minimise(doc, "hash")["status"] == "brand_new_status"


@pytest.mark.parametrize(
    "created_at",
    ["2016-12-31T23:59:60Z", "NaN", "2024-13-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "2024-07-08T14:29:24"],
)
def test_an_unusable_object_created_at_is_refused(created_at):
    doc = set_at(inquiry_with_everything(), (*OBJECT, "attributes", "created_at"), created_at)
    with pytest.raises(InvalidEvent) as raised:
        minimise(doc, "hash")
    assert raised.value.field == "data.attributes.payload.data.attributes.created_at"


def test_other_unusable_lifecycle_times_are_dropped_and_usable_ones_canonical():
    times = {
        "completed_at": "2024-07-08T16:29:21+02:00",
        "started_at": "2016-12-31T23:59:60Z",
        "failed_at": "NaN",
        "expired_at": "0001-01-01T00:30:00+01:00",
        "decisioned_at": "2024-13-01T00:00:00Z",
        "redacted_at": "\ud800",
        "updated_at": 1720448964,
    }
    doc = inquiry_with_everything()
    doc["data"]["attributes"]["payload"]["data"]["attributes"].update(times)
    assert minimise(doc, "hash")["timestamps"] == {
        "created_at": "2024-07-08T14:28:41.000Z",
        "completed_at": "2024-07-08T14:29:21.000Z",
    }


@pytest.mark.parametrize("value", [12, 1.5, True, ["a"], {"id": "a"}])
@pytest.mark.parametrize("where", ["inquiry", "included account"])
def test_a_reference_id_that_is_not_a_string_is_refused_naming_it_not_given_to_another_id(value, where):
    """Found by a trial: `"reference-id": 12` was dropped as missing, and the event went to the reference id of the
    account it included, another person's record."""
    attributes = {"status": "approved", "reference-id": "user_1"}
    document = envelope(attributes=attributes)
    if where == "inquiry":
        attributes["reference-id"] = value
    else:
        document["data"]["attributes"]["payload"]["included"] = [
            {"type": "account", "id": "act_1", "attributes": {"reference-id": value}}
        ]
        document["data"]["attributes"]["payload"]["data"]["relationships"] = {
            "account": {"data": {"type": "account", "id": "act_1"}}
        }
    with pytest.raises(ValidationError) as raised:
        minimise_doc(document)
    [(field, [problem])] = raised.value.messages.items()
    assert field.endswith("reference_id") and problem.startswith("must be a string")


@pytest.mark.parametrize("value", [None, ""])
def test_an_absent_reference_id_is_none(value):
    event = minimise_doc(envelope(attributes={"status": "approved", "reference-id": value}))
    assert event["reference_id"] is None
