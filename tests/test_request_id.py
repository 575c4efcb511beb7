"""A request id follows a message from the web request to the worker's log lines.

RequestIdMiddleware takes X-Request-ID (or makes one), answers with it and tags every log
line of the request; panels/celery.py carries it in the task's headers, and the worker
tags its own lines for that task with it. The end-to-end test reads a real worker's
structured (JSON) log output.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid

import pytest
from rest_framework.test import APIClient

from chat.models import Conversation
from panels.logging import JsonFormatter, RequestIdFilter, request_id_var
from tests.conftest import test_database_url as database_url_for_workers
from tests.e2e_servers import (  # noqa: F401
    Worker,
    chat_catalog,
    demo_server,
    parse_events,
    read_until_end,
    start_worker,
    stop_worker,
    tasks_routed_to,
)
from tests.wallet_helpers import funded_wallet

# --- the web side ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("test-123", True),
        ("a.b_c-D9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("has space", False),
        ("<script>", False),
        ("ünïcode", False),
        ("", False),
    ],
)
def test_the_response_carries_the_request_id(client, sent, kept):
    headers = {"HTTP_X_REQUEST_ID": sent} if sent else {}

    response = client.get("/healthz", **headers)

    answered = response["X-Request-ID"]
    if kept:
        assert answered == sent
    else:
        # Anything that could break a log line or a header is replaced, not echoed.
        assert answered != sent and len(answered) == 32 and int(answered, 16) >= 0


@pytest.mark.django_db
def test_each_request_without_an_id_gets_its_own(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]

    assert first != second


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


@pytest.fixture
def captured_json_logs():
    """The project's own handler (JSON formatter and request-id filter) on the root logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.mark.django_db(transaction=True)
def test_web_log_lines_of_a_request_carry_its_id(
    alice,
    chat_catalog,  # noqa: F811
    captured_json_logs,
    monkeypatch,
):
    funded_wallet(alice, 1_000_000)
    published: list[dict] = []

    def publish(*, message_id: int) -> None:
        # What the publish signal adds to the task's headers, without a broker.
        from panels.celery import _carry_request_id

        headers: dict = {}
        _carry_request_id(headers=headers)
        published.append(headers)

    monkeypatch.setattr("chat.tasks.message_enqueue", publish)
    client = APIClient()
    client.force_login(alice)
    conversation = Conversation.objects.create(user=alice)

    # A transactional test: the task is published when the view's transaction commits,
    # inside the request, as in production.
    response = client.post(
        f"/api/v1/conversations/{conversation.pk}/messages",
        {"content": "hi", "model": "demo"},
        format="json",
        HTTP_X_REQUEST_ID="web-456",
    )

    assert response.status_code == 202
    assert response["X-Request-ID"] == "web-456"
    assert published == [{"request_id": "web-456"}]
    queued = [line for line in json_lines(captured_json_logs.getvalue()) if line["msg"] == "reply queued"]
    assert queued and all(line["request_id"] == "web-456" for line in queued)
    assert queued[0]["message_id"] == response.json()["id"]
    # Outside a request, the id is unset again.
    assert request_id_var.get() == "-"


def test_a_log_line_is_one_json_object_with_the_id():
    record = logging.LogRecord("chat.services", logging.INFO, __file__, 1, "reply settled", None, None)
    record.message_id = 7
    record.cost = 12
    token = request_id_var.set("abc-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)

    line = json.loads(JsonFormatter().format(record))

    assert line["request_id"] == "abc-1"
    assert line["msg"] == "reply settled"
    assert (line["message_id"], line["cost"], line["level"], line["logger"]) == (7, 12, "INFO", "chat.services")


# --- web to worker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def info_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real worker that logs at INFO, so its per-reply lines can be read."""
    with django_db_blocker.unblock():
        database_url = database_url_for_workers()
    worker = start_worker(
        database_url=database_url, log_dir=tmp_path_factory.mktemp("worker"), env={"LOG_LEVEL": "INFO"}
    )
    try:
        with tasks_routed_to(worker.queue):
            yield worker
    finally:
        stop_worker(worker)


def worker_lines(worker: Worker, message_id: int) -> list[dict]:
    return [
        line for line in json_lines(worker.log_path.read_text(errors="replace")) if line.get("message_id") == message_id
    ]


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    return predicate()


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_the_request_id_follows_a_message_to_the_worker(alice, chat_catalog, info_worker):  # noqa: F811
    funded_wallet(alice, 1_000_000)
    client = APIClient()
    client.force_login(alice)
    conversation = client.post("/api/v1/conversations", {"title": "ids"}, format="json").json()["id"]

    response = client.post(
        f"/api/v1/conversations/{conversation}/messages",
        {"content": "[demo:tokens=4] hello", "model": "demo"},
        format="json",
        HTTP_X_REQUEST_ID="test-123",
    )
    assert response.status_code == 202
    assert response["X-Request-ID"] == "test-123"
    reply_id = response.json()["id"]
    stream = client.get(f"/api/v1/messages/{reply_id}/stream", HTTP_ACCEPT="text/event-stream")
    events = read_until_end(parse_events(stream.streaming_content))
    assert events[-1].kind == "done"

    def settled() -> list[dict]:
        lines = worker_lines(info_worker, reply_id)
        return lines if any(line["msg"] == "reply settled" for line in lines) else []

    lines = wait_for(settled)
    assert lines, info_worker.log_tail()
    assert [line["msg"] for line in lines] == ["reply claimed", "first token", "reply settled"], lines
    assert {line["request_id"] for line in lines} == {"test-123"}, lines
    done = lines[-1]
    assert done["cost"] == events[-1].data["cost"] and done["status"] == "done"
    assert done["output_tokens"] == 4 and done["estimated"] is False
    assert all(line["level"] == "INFO" and line["logger"] == "chat.worker" for line in lines)


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_two_messages_keep_their_own_ids_in_the_worker(alice, chat_catalog, info_worker):  # noqa: F811
    funded_wallet(alice, 1_000_000)
    client = APIClient()
    client.force_login(alice)
    ids = {}
    for _ in range(2):
        conversation = client.post("/api/v1/conversations", {}, format="json").json()["id"]
        request_id = f"req-{uuid.uuid4().hex[:8]}"
        response = client.post(
            f"/api/v1/conversations/{conversation}/messages",
            {"content": "[demo:tokens=3] hi", "model": "demo"},
            format="json",
            HTTP_X_REQUEST_ID=request_id,
        )
        ids[response.json()["id"]] = request_id

    for reply_id, request_id in ids.items():
        lines = wait_for(
            lambda reply_id=reply_id: [
                line for line in worker_lines(info_worker, reply_id) if line["msg"] == "reply settled"
            ]
        )
        assert lines, info_worker.log_tail()
        assert {line["request_id"] for line in worker_lines(info_worker, reply_id)} == {request_id}


def test_a_task_takes_the_id_from_its_headers_and_drops_it_when_it_ends():
    # Cleared when a task ends, so a worker thread's next lines don't inherit it.
    from panels.celery import _clear_request_id, _restore_request_id

    class Request:
        request_id = None
        headers = {"request_id": "from-headers"}

    class Task:
        request = Request()

    _restore_request_id(task=Task())
    assert request_id_var.get() == "from-headers"
    _clear_request_id()
    assert request_id_var.get() == "-"
