"""The pipeline on its own: a sender and a delivery built from a send function and a retry
policy, with no session and no network."""

from __future__ import annotations

import json
import threading
import time

import syvain_metrics as sm
from syvain_metrics.errors import MetricsApiRequestError
from syvain_metrics.pipeline.batch import Batch, encode_events, queued_event
from syvain_metrics.pipeline.delivery import Uplink, deliver
from syvain_metrics.pipeline.sender import Sender, Settled

FAST = sm.RetryPolicy(backoff_base=0.01, delivery_backoff_cap=0.02)


def _batch(count: int) -> Batch:
    events = [{"client_event_id": f"e{i}", "name": "loss", "value": float(i)} for i in range(count)]
    return Batch("exp-1", [encode_events(events)])


def _ids(batch: Batch) -> list[str]:
    return [event["client_event_id"] for event in json.loads(batch.body())["data"]]


def test_the_event_an_answer_names_by_its_field_is_isolated_at_once() -> None:
    sent: list[list[str]] = []

    def send(batch: Batch) -> None:
        ids = _ids(batch)
        sent.append(ids)
        if "e6" in ids:
            raise MetricsApiRequestError(
                "HTTP 422: Invalid metric: value must be finite",
                status_code=422,
                error_code="validation_error",
                field=f"data[{ids.index('e6')}].value",
            )

    outcome = deliver(Uplink(send=send, policy=FAST), _batch(10), wait=lambda _: False)

    assert outcome.stored == 9
    assert [r.event["client_event_id"] for r in outcome.rejected] == ["e6"]
    assert outcome.rejected[0].status_code == 422
    # The whole batch, then the three parts around the named event: no halving.
    assert sent == [
        [f"e{i}" for i in range(10)],
        [f"e{i}" for i in range(6)],
        ["e6"],
        ["e7", "e8", "e9"],
    ]


def test_a_refusal_that_names_no_event_is_split_by_halves() -> None:
    def send(batch: Batch) -> None:
        if "e1" in _ids(batch):
            raise MetricsApiRequestError("HTTP 400: bad", status_code=400, field="name")

    outcome = deliver(Uplink(send=send, policy=FAST), _batch(4), wait=lambda _: False)

    assert outcome.stored == 3
    assert [r.event["client_event_id"] for r in outcome.rejected] == ["e1"]


def test_a_retryable_failure_is_tried_again_at_the_policys_pace() -> None:
    failures = iter([True, True, False])
    waits: list[float] = []

    def send(batch: Batch) -> None:
        if next(failures):
            raise MetricsApiRequestError("HTTP 503", status_code=503, retryable=True)

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    outcome = deliver(Uplink(send=send, policy=FAST), _batch(3), wait=wait)

    assert outcome.stored == 3
    assert len(waits) == 2
    assert all(0 <= pause <= FAST.delivery_backoff_cap for pause in waits)


def test_a_sender_built_from_a_send_function_delivers_everything_once() -> None:
    received: list[str] = []
    lock = threading.Lock()

    def send(batch: Batch) -> None:
        with lock:
            received.extend(_ids(batch))

    sender = Sender(Uplink(send=send, policy=FAST), host="http://x", spool_dir=None, interval=0.05)
    for step in range(2_500):
        sender.put(queued_event("exp-1", f"id-{step}", "loss", 0.5, step, None, None))
    settled = sender.close(timeout=30)

    # ``stored`` counts what was still unanswered when close() began: full batches may have
    # been answered before it, so it is at most everything.
    assert (settled.pending, settled.rejected) == (0, [])
    assert 0 <= settled.stored <= 2_500
    # Several batches are in flight at once: each is sent whole, in any order.
    assert sorted(received) == sorted(f"id-{step}" for step in range(2_500))


def test_a_wait_ends_only_once_every_event_before_it_is_answered() -> None:
    # The first batch is answered last: batches logged after the wait began are answered
    # before it, and must not count for it.
    received: list[str] = []
    lock = threading.Lock()

    def send(batch: Batch) -> None:
        if batch.first == 0:
            time.sleep(0.5)
        with lock:
            received.extend(_ids(batch))

    sender = Sender(Uplink(send=send, policy=FAST), host="http://x", spool_dir=None, interval=0.05)
    for step in range(1_000):
        sender.put(queued_event("exp-1", f"id-{step}", "loss", 0.5, step, None, None))
    waited: list[Settled] = []
    waiter = threading.Thread(target=lambda: waited.append(sender.wait(["exp-1"], 30)))
    waiter.start()
    for step in range(1_000, 3_000):  # behind the wait's mark: not waited for
        sender.put(queued_event("exp-1", f"id-{step}", "loss", 0.5, step, None, None))
    waiter.join(timeout=30)
    with lock:
        seen = set(received)
    assert {f"id-{step}" for step in range(1_000)} <= seen  # not released before the first
    assert (waited[0].stored, waited[0].pending) == (1_000, 0)
    assert sender.close(timeout=30).pending == 0
    assert sorted(received) == sorted(f"id-{step}" for step in range(3_000))
