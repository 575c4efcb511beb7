"""The key API's handler in process (panels/asgi.py: ApiASGIHandler): what it costs a request
beyond the view, and that the answers are the ones the site's stack gives."""

from __future__ import annotations

import asyncio
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
    return importlib.import_module("panels.asgi")


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
