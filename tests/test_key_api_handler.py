"""The key API's handler in process (panels/asgi.py: ApiASGIHandler): what it costs a request
beyond the view, and that the answers are the ones the site's stack gives."""

from __future__ import annotations

import asyncio
import gc
import importlib
import json

import pytest
from django.urls import resolve

from panels.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_api_path_is_matched_before_any_of_the_sites_pages_is_tried():
    """Django tries the URL patterns in order; the site's includes (allauth's dozens of pages)
    came first and cost every API call a look at each of them."""
    for path in ("/api/v1/conversations/7/messages", "/api/v1/messages/7/stream", "/v1/chat/completions"):
        match = resolve(path)
        tried_first = {str(chain[0].pattern) for chain in match.tried}
        assert not tried_first & {"accounts/", "wallet/"}, (path, tried_first)
        assert all(chain[0].urlconf_name != "chat.urls" for chain in match.tried if hasattr(chain[0], "urlconf_name"))
    # The pages still resolve as before.
    assert resolve("/chat/").url_name == "chat"
    assert resolve("/wallet/").namespace == resolve("/wallet/").namespace
    assert resolve("/accounts/login/").url_name == "account_login"


async def _call(app, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict, bytes]:
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if body:
        raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": raw_headers,
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    finished = asyncio.Event()
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            finished.set()

    await app(scope, receive, send)
    start = sent[0]
    return (
        start["status"],
        {k.decode(): v.decode() for k, v in start["headers"]},
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


@pytest.fixture
def asgi(monkeypatch):
    monkeypatch.setattr("chat.router.warm", lambda: 0.0)  # no encoder to load for these requests
    module = importlib.import_module("panels.asgi")
    gc.unfreeze()  # the import froze the test process's heap (settle_heap): collect it as usual
    return module


def test_a_key_requests_view_and_its_rendering_take_one_hop_to_its_thread(asgi, alice, api_client, monkeypatch):
    """request_started's receivers, the view, the rendering of its response and its close
    (request_finished) run in one hop to the request's thread (Django's handler made four)."""
    from asgiref.sync import SyncToAsync
    from django.core import signals

    _, secret = ApiKey.issue(user=alice, name="hops")
    hops: list[str] = []
    real = SyncToAsync.__call__

    def counting(self, *args, **kwargs):
        hops.append(getattr(self.func, "__name__", repr(self.func)))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting)
    started: list[str] = []

    def on_start(sender, **kwargs) -> None:
        started.append(hops[-1])

    finished: list[str] = []

    def on_finish(sender, **kwargs) -> None:
        finished.append(hops[-1])

    signals.request_started.connect(on_start)
    signals.request_finished.connect(on_finish)
    try:
        _check_hops(asgi, secret, api_client, hops, started, finished)
    finally:
        signals.request_started.disconnect(on_start)
        signals.request_finished.disconnect(on_finish)


def _check_hops(asgi, secret, api_client, hops, started, finished) -> None:
    handler = asgi.ApiASGIHandler(asgi.KEY_API_MIDDLEWARE)
    headers = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}
    status, got_headers, body = asyncio.run(_call(handler, "GET", "/api/v1/models", headers))
    assert hops == ["_view_and_render"] and started == ["_view_and_render"] and len(finished) == 1
    assert status == 200 and got_headers["Content-Type"] == "application/json"
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    expected = api_client.get("/api/v1/models", HTTP_ACCEPT="application/json")
    assert json.loads(body) == expected.json() and body == expected.content
    assert got_headers["Vary"] == expected["Vary"] and got_headers["Allow"] == expected["Allow"]

    # An error is the API's JSON error, rendered the same way.
    hops.clear()
    finished.clear()
    status, _, body = asyncio.run(_call(handler, "GET", "/api/v1/messages/999999", headers))
    assert hops == ["_view_and_render", "log_response"]  # Django logs a 4xx off the loop, as before
    assert finished == ["_view_and_render"]  # closed once, in the view's hop
    assert status == 404 and json.loads(body) == {"error": {"code": "not_found", "message": "Not found."}}
    status, _, body = asyncio.run(_call(handler, "GET", "/api/v1/models", {"Authorization": "Bearer pnl_no_x"}))
    assert status == 401 and json.loads(body)["error"]["code"] == "not_authenticated"

    # A request the edge middleware answers itself (a body over the limit) still signals its start.
    started.clear()
    too_big = {**headers, "Content-Length": "99999999"}
    status, _, body = asyncio.run(_call(handler, "POST", "/api/v1/conversations", too_big))
    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"
    assert len(started) == 1


def _reply_and_key(user, name="stream"):
    from django.utils import timezone

    from chat import streams
    from chat.models import Conversation, Message
    from openai_api import cache

    conversation = Conversation.objects.create(user=user)
    reply = Message.objects.create(conversation=conversation, role="assistant", status="queued")
    api_key, secret = ApiKey.issue(user=user, name=name)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now())  # used a moment ago
    assert cache.key_verified(secret) is not None  # as the send's authentication leaves it
    streams.remember_accepted(reply, user_id=user.pk)  # as the send does
    writer = streams.ReplyWriter(reply)
    writer.delta("Hello")
    writer.terminal("done", {"status": "done", "cost": 3})
    return reply, secret


def _counting_hops(monkeypatch) -> list[str]:
    from asgiref.sync import SyncToAsync

    hops: list[str] = []
    real = SyncToAsync.__call__

    def counting(self, *args, **kwargs):
        hops.append(getattr(self.func, "__name__", repr(self.func)))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting)
    return hops


def test_the_first_reader_of_a_reply_just_accepted_is_answered_on_the_loop(asgi, alice, monkeypatch):
    """A key this process verified, a reply it accepted for that key's user: no hop to a thread
    and no database before the stream (the one hop is the response's close after its end), and
    the same events and headers as the view gives."""
    reply, secret = _reply_and_key(alice)
    hops = _counting_hops(monkeypatch)
    handler = asgi.ApiASGIHandler(asgi.KEY_API_MIDDLEWARE)
    headers = {"Authorization": f"Bearer {secret}", "Accept": "text/event-stream"}
    path = f"/api/v1/messages/{reply.pk}/stream"
    status, fast_headers, fast_body = asyncio.run(_call(handler, "GET", path, headers))
    assert status == 200 and hops == ["close"]
    assert b"event: delta" in fast_body and b"event: done" in fast_body

    hops.clear()  # the reply was remembered for one reader: the next is the view's
    status, view_headers, view_body = asyncio.run(_call(handler, "GET", path, headers))
    assert status == 200 and hops[0] == "_view_and_render"
    assert fast_body == view_body
    fast_headers.pop("X-Request-ID"), view_headers.pop("X-Request-ID")
    assert fast_headers == view_headers


def test_any_other_stream_request_is_the_views(asgi, alice, bob, monkeypatch):
    from chat import streams

    reply, secret = _reply_and_key(alice)
    hops = _counting_hops(monkeypatch)
    handler = asgi.ApiASGIHandler(asgi.KEY_API_MIDDLEWARE)
    path = f"/api/v1/messages/{reply.pk}/stream"

    def get(headers: dict[str, str]) -> tuple[int, bytes]:
        hops.clear()
        status, _, body = asyncio.run(_call(handler, "GET", path, headers))
        assert hops[0] == "_view_and_render", headers
        return status, body

    # Not the reply's owner: the view's 404, and the owner's first read is still remembered.
    _, bob_secret = ApiKey.issue(user=bob, name="b")
    assert get({"Authorization": f"Bearer {bob_secret}"})[0] == 404
    # A reader resuming after an event; a media type the stream doesn't serve (406); a key
    # this process has not verified; a key whose last use is due to be written.
    status, body = get({"Authorization": f"Bearer {secret}", "Last-Event-ID": "5-0"})
    assert status == 200 and b"event: delta" not in body and b"event: done" in body
    assert get({"Authorization": f"Bearer {secret}", "Accept": "text/html"})[0] == 406
    from openai_api import cache

    cache.clear()
    assert get({"Authorization": f"Bearer {secret}"})[0] == 200  # verified (from the database) again
    ApiKey.objects.filter(user=alice).update(last_used_at=None)
    cache.clear()
    streams.remember_accepted(reply, user_id=alice.pk)
    assert cache.key_verified(secret).last_used_at is None
    assert get({"Authorization": f"Bearer {secret}"})[0] == 200
    assert ApiKey.objects.get(user=alice).last_used_at is not None  # written, as on every path
