"""scripts/send_sample_event.py walks a user through an inquiry's lifecycle with new events (issue 11: it
could send only the captured event, a `duplicate` from the second run of the dev stack on)."""

from __future__ import annotations

import json
import pickle

import pytest
from rq import Queue

from scripts.send_sample_event import EVENT_FOR_STATUS, sample_body
from tests.payloads import WEBHOOK, headers


def queued_event(redis, config) -> dict:
    [job_id] = Queue(config.events_queue, connection=redis).job_ids
    data = redis.hget(f"rq:job:{job_id}", "data")
    _function, _instance, (event,), _kwargs = pickle.loads(data)
    return event


def test_the_captured_event_is_the_same_every_time():
    assert sample_body("sandbox_inquiry_approved.json", "u1") == sample_body("sandbox_inquiry_approved.json", "u1")


@pytest.mark.parametrize("status", list(EVENT_FOR_STATUS))
def test_a_status_makes_a_new_event_the_service_queues_with_that_status(client, redis, config, status):
    body = sample_body("sandbox_inquiry_approved.json", "user_walk", status)
    answer = client.post(WEBHOOK, data=body, headers=headers(body))
    assert (answer.status_code, answer.json["status"]) == (200, "queued")
    event = queued_event(redis, config)
    assert event["name"] == EVENT_FOR_STATUS[status]
    assert (event["status"], event["object_id"], event["reference_id"]) == (status, "inq_sample_user_walk", "user_walk")


def test_each_status_event_has_a_fresh_id_so_none_is_a_duplicate(client):
    bodies = [sample_body("sandbox_inquiry_approved.json", "u2", "created") for _ in range(3)]
    answers = [client.post(WEBHOOK, data=body, headers=headers(body)).json["status"] for body in bodies]
    assert answers == ["queued", "queued", "queued"]
    assert len({json.loads(body)["data"]["id"] for body in bodies}) == 3


def test_each_sample_user_has_an_account_of_its_own(client, redis, config):
    """Issue 11: every sample user shared the fixture's Persona account, so all were linked to one another
    and a replay of one user touched them all."""
    accounts = set()
    for reference_id in ("user_a", "user_b"):
        body = sample_body("sandbox_inquiry_approved.json", reference_id, "created")
        assert client.post(WEBHOOK, data=body, headers=headers(body)).get_json()["status"] == "queued"
        event = queued_event(redis, config)
        redis.delete(f"rq:queue:{config.events_queue}")
        assert event["reference_id"] == reference_id
        accounts.add(event["account_id"])
    assert len(accounts) == 2 and all(account.startswith("act_sample_") for account in accounts)


@pytest.mark.parametrize("reference_id", ['a"b', "back\\slash", "ünï"])
def test_any_reference_id_makes_a_valid_event(client, redis, config, reference_id):
    """Found by the operator trial: the id was pasted into the JSON as is, so a quote broke the body."""
    body = sample_body("sandbox_inquiry_approved.json", reference_id, "created")
    assert client.post(WEBHOOK, data=body, headers=headers(body)).get_json()["status"] == "queued"
    assert queued_event(redis, config)["reference_id"] == reference_id
