"""GroupCommit (app/group_commit.py): concurrent calls share a send, and each caller gets its own answer."""

from __future__ import annotations

import threading
import time

import pytest

from app.group_commit import GroupCommit


class Recorder:
    """A `send` that records each batch, answers each call with itself doubled, and takes a little
    while, as a round trip does, so that calls pile up behind it."""

    def __init__(self, seconds: float = 0.01, fail: Exception | None = None):
        self.batches: list[list[int]] = []
        self.seconds, self.fail = seconds, fail

    def __call__(self, calls: list[int]) -> list:
        self.batches.append(list(calls))
        time.sleep(self.seconds)
        if self.fail is not None:
            raise self.fail
        return [ValueError(f"odd {call}") if call % 7 == 6 else call * 2 for call in calls]


def submit_together(group: GroupCommit, calls: list[int]) -> dict[int, object]:
    answers: dict[int, object] = {}
    start = threading.Barrier(len(calls))

    def caller(call: int) -> None:
        start.wait()
        try:
            answers[call] = group.submit(call)
        except Exception as error:  # noqa: BLE001 - recorded for the assertions
            answers[call] = error

    threads = [threading.Thread(target=caller, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return answers


def test_a_lone_call_is_sent_at_once_and_alone():
    send = Recorder(seconds=0)
    assert GroupCommit(send).submit(3) == 6
    assert send.batches == [[3]]


def test_concurrent_calls_share_round_trips_and_each_gets_its_own_answer():
    send = Recorder()
    answers = submit_together(GroupCommit(send), list(range(40)))
    assert sorted(call for batch in send.batches for call in batch) == list(range(40))  # each sent once
    assert len(send.batches) < 40  # calls that came while one was on the wire went together
    for call, answer in answers.items():
        if call % 7 == 6:
            assert isinstance(answer, ValueError) and str(answer) == f"odd {call}"
        else:
            assert answer == call * 2


def test_a_failed_send_fails_every_call_it_carried_and_the_next_calls_go_again():
    send = Recorder(fail=ConnectionError("redis went away"))
    group = GroupCommit(send)
    answers = submit_together(group, list(range(10)))
    assert all(isinstance(answer, ConnectionError) for answer in answers.values())
    send.fail = None
    assert group.submit(4) == 8


def test_a_send_answering_the_wrong_number_of_results_fails_its_calls():
    group = GroupCommit(lambda calls: [])
    with pytest.raises(RuntimeError, match="0 results for 1 calls"):
        group.submit(1)


def test_an_interrupted_sender_leaves_the_calls_it_took_for_the_next_caller():
    sent: list[list[int]] = []

    def interrupted_once(calls: list[int]) -> list[int]:
        sent.append(list(calls))
        if len(sent) == 1:
            raise KeyboardInterrupt  # a BaseException: the sender's greenlet killed, say
        return [call * 2 for call in calls]

    group = GroupCommit(interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        group.submit(1)
    assert group.submit(2) == 4
    assert sent == [[1], [1, 2]]  # the interrupted call was sent again (send is idempotent)
