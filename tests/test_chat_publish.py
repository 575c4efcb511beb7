"""A reply's task queued with one LPUSH (chat/publish.py) is the message `apply_async`
writes: same envelope, headers, properties and body, on the same list. The end-to-end
tests (tests/test_chat_e2e.py) run such messages through a real Celery worker."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import redis

from chat import publish, tasks
from panels.logging import request_id_var
from panels.redis_client import get_redis
from tests.e2e_servers import tasks_routed_to

VARYING_HEADERS = {"id", "root_id"}
VARYING_PROPERTIES = {"correlation_id", "delivery_tag"}


def _decoded(raw: bytes) -> dict:
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def _both(queue: str) -> tuple[dict, dict]:
    app = tasks.message_run.app
    token = request_id_var.set("req-123")
    try:
        with tasks_routed_to(queue):
            assert publish.available(app)  # the path sends take in the tests, as in production
            tasks.message_run.apply_async((42,), retry=True, retry_policy=tasks.PUBLISH_RETRY_POLICY)
            kombus = get_redis().rpop(queue)
            publish.publish(app, tasks.message_run.name, (42,), retry_policy=tasks.PUBLISH_RETRY_POLICY)
            ours = get_redis().rpop(queue)
    finally:
        request_id_var.reset(token)
    assert get_redis().llen(queue) == 0
    return _decoded(kombus), _decoded(ours)


def test_the_lpush_writes_the_message_apply_async_writes():
    kombus, ours = _both(f"test-publish-{uuid.uuid4().hex}")
    assert ours.keys() == kombus.keys()
    assert (
        ours["body"]
        == kombus["body"]
        == [[42], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    assert ours["headers"].keys() == kombus["headers"].keys()
    for name, value in kombus["headers"].items():
        if name not in VARYING_HEADERS:
            assert ours["headers"][name] == value, name
    assert ours["headers"]["task"] == "chat.message_run" and ours["headers"]["request_id"] == "req-123"
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert ours["properties"].keys() == kombus["properties"].keys()
    for name, value in kombus["properties"].items():
        if name not in VARYING_PROPERTIES:
            assert ours["properties"][name] == value, name
    assert ours["properties"]["delivery_tag"] != kombus["properties"]["delivery_tag"]
    assert (ours["content-type"], ours["content-encoding"]) == ("application/json", "utf-8")


class _Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.pushed: list = []

    def lpush(self, queue: str, message: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("down for a moment")
        self.pushed.append((queue, message))


def test_a_failed_write_is_tried_again_as_apply_async_would_then_raises(monkeypatch):
    app = tasks.message_run.app
    policy = {**tasks.PUBLISH_RETRY_POLICY, "interval_step": 0, "interval_max": 0}
    flaky = _Flaky(failures=policy["max_retries"])
    monkeypatch.setattr(publish, "get_redis", lambda: flaky)
    publish.publish(app, tasks.message_run.name, (1,), retry_policy=policy)
    assert len(flaky.pushed) == 1
    down = _Flaky(failures=policy["max_retries"] + 1)
    monkeypatch.setattr(publish, "get_redis", lambda: down)
    with pytest.raises(redis.ConnectionError):
        publish.publish(app, tasks.message_run.name, (1,), retry_policy=policy)
    assert down.pushed == []


def test_another_broker_or_eager_tasks_keep_apply_async(settings):
    app = tasks.message_run.app
    assert publish.available(app)
    app.conf.task_always_eager = True
    try:
        assert not publish.available(app)
    finally:
        app.conf.task_always_eager = False
    previous = app.conf.broker_url
    app.conf.broker_url = "redis://elsewhere:6379/0"
    try:
        assert not publish.available(app)
    finally:
        app.conf.broker_url = previous
