"""Panels' own API called with a key, through a live uvicorn process: it runs its own edge
middleware on the event loop instead of the site's (panels/asgi.py,
panels/middleware.py: KeyApiEdgeMiddleware) and keeps what the site's gave its responses."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from chat.models import Message
from panels.middleware import CONTENT_SECURITY_POLICY
from panels.models import ApiKey
from tests.conftest import test_database_url as database_url
from tests.e2e_servers import (  # noqa: F401
    celery_worker,
    chat_catalog,
    demo_server,
    parse_events,
    read_until_end,
    start_web,
    stop_web,
    text_of,
)
from tests.wallet_helpers import funded_wallet
from wallet.models import Account

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def live_web(celery_worker, django_db_blocker, tmp_path_factory):  # noqa: F811
    # The web process queues replies where this module's worker reads them.
    with django_db_blocker.unblock():
        url = database_url()
    web = start_web(
        database_url=url,
        log_dir=tmp_path_factory.mktemp("web"),
        env={"CELERY_TASK_DEFAULT_QUEUE": celery_worker.queue},
    )
    try:
        yield web
    finally:
        stop_web(web)


@pytest.fixture
def http(alice, chat_catalog, live_web) -> httpx.Client:  # noqa: F811
    funded_wallet(alice, 1_000_000)
    _, secret = ApiKey.issue(user=alice, name="edge")
    with httpx.Client(base_url=live_web.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30) as client:
        yield client


def assert_site_headers(response: httpx.Response, request_id: str | None = None) -> None:
    if request_id is not None:
        assert response.headers["X-Request-ID"] == request_id
    else:
        assert len(response.headers["X-Request-ID"]) == 32  # one made when the client sent none
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def test_a_key_send_and_its_stream_keep_the_sites_headers_and_contract(http, alice):
    made = http.post("/api/v1/conversations", json={"title": "edge"})
    assert made.status_code == 201
    assert_site_headers(made)
    sent = http.post(
        f"/api/v1/conversations/{made.json()['id']}/messages",
        json={"content": "[demo:tokens=6] hello", "model": "demo"},
        headers={"X-Request-ID": "trace-send"},
    )
    assert sent.status_code == 202, sent.text
    assert_site_headers(sent, "trace-send")
    assert "Set-Cookie" not in sent.headers  # no session: the browser's middleware did not run
    reply_id = sent.json()["id"]
    with http.stream("GET", f"/api/v1/messages/{reply_id}/stream", headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert_site_headers(r)
        events = read_until_end(parse_events(r.iter_bytes()))
    reply = Message.objects.get(pk=reply_id)
    assert events[-1].kind == "done", events
    assert text_of(events) == reply.content and reply.status == "done"
    assert events[-1].data["balance"] == Account.objects.get(user=alice).balance


def test_a_key_request_over_the_body_limit_is_a_413_in_the_apis_shape(http):
    too_big = http.post(
        "/api/v1/conversations", content=b"x" * (8 * 1024 * 1024 + 1), headers={"X-Request-ID": "trace-big"}
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "too_large"
    assert_site_headers(too_big, "trace-big")


def test_a_wrong_key_is_refused_as_before(live_web):
    refused = httpx.get(f"{live_web.url}/api/v1/conversations", headers={"Authorization": "Bearer pnl_nope_x"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "not_authenticated"
    assert_site_headers(refused)
