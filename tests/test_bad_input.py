"""Bad input gets a clear 4xx and changes nothing.

Oversized bodies, broken JSON, the wrong content type, unknown models, amounts that are
negative, fractional or absurd, ids that do not fit a database integer, missing CSRF
tokens and expired sessions: each answers with a 4xx (JSON for the API), and the ledger,
holds, messages, conversations and top-ups are exactly as they were.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from chat.models import Conversation, Message
from panels.models import ApiKey
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold, Topup

pytestmark = pytest.mark.django_db

START = 1_000_000


@pytest.fixture(autouse=True)
def fresh_throttles(db) -> Iterator[None]:
    # Throttle counters live in the shared cache table, which outlives a test's transaction.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def nothing_is_queued(monkeypatch) -> list[int]:
    ids: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: ids.append(message_id))
    return ids


@pytest.fixture
def api(alice, chat_catalog) -> APIClient:  # noqa: F811
    funded_wallet(alice, START)
    client = APIClient()
    client.force_login(alice)
    return client


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(user=alice, title="Kept")


def state() -> dict:
    """Everything a bad request must leave alone."""
    return {
        "entries": Entry.objects.count(),
        "holds": list(Hold.objects.order_by("pk").values_list("pk", "status", "amount")),
        "messages": list(Message.objects.order_by("pk").values_list("pk", "status", "content")),
        "conversations": list(Conversation.objects.order_by("pk").values_list("pk", "title")),
        "topups": list(Topup.objects.order_by("pk").values_list("pk", "status", "credited_at")),
        "accounts": list(Account.objects.order_by("pk").values_list("pk", "balance", "held")),
        "keys": list(ApiKey.objects.order_by("pk").values_list("pk", "revoked_at")),
    }


def assert_json_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    error = json.loads(response.content)["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def send_url(conversation: Conversation) -> str:
    return f"/api/v1/conversations/{conversation.pk}/messages"


# --- oversized bodies ------------------------------------------------------------------


def oversized_json() -> bytes:
    body = json.dumps({"content": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1), "model": "demo"})
    return body.encode()


@pytest.mark.parametrize(
    "url",
    ["send", "/api/v1/conversations", "/api/v1/topups", "/api/v1/route"],
)
def test_an_api_body_over_the_upload_limit_is_413_json(api, conversation, url):
    url = send_url(conversation) if url == "send" else url
    before = state()

    response = api.post(url, oversized_json(), content_type="application/json")

    error = assert_json_error(response, 413, "too_large")
    assert f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,}" in error["message"]
    assert state() == before


def test_an_api_body_over_the_upload_limit_is_413_with_an_api_key_too(alice, conversation, chat_catalog):  # noqa: F811
    funded_wallet(alice, START)
    _, secret = ApiKey.issue(user=alice, name="big")
    before = state()

    response = APIClient().post(
        send_url(conversation),
        oversized_json(),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    assert_json_error(response, 413, "too_large")
    assert state() == before


def test_a_body_just_under_the_limit_is_read(api, conversation, settings):
    """The limit is the limit: a large body below it reaches the view (which judges its content)."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    body = json.dumps({"title": "t" * 100, "pad": "p" * 3000}).encode()
    assert len(body) < 4096

    response = api.post("/api/v1/conversations", body, content_type="application/json")

    assert response.status_code == 201


def test_a_page_form_over_the_upload_limit_is_413_and_starts_no_topup(alice_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    before = state()

    response = alice_client.post("/wallet/topup/", {"amount_usd": "5", "pad": "p" * 5000})

    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/html")
    assert b"too large" in response.content
    assert state() == before


# --- broken JSON and the wrong content type -----------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"content": "hi", "model": "demo"', b"\xff\xfe\x00", b'{"content": "\\ud800", "model": "demo"'],
    ids=["garbage", "truncated", "not-utf8", "lone-surrogate"],
)
def test_invalid_json_is_400_json(api, conversation, body):
    before = state()

    response = api.post(send_url(conversation), body, content_type="application/json")

    assert_json_error(response, 400)
    assert state() == before


@pytest.mark.parametrize(
    "body",
    [[], ["hi"], "hi", 42, None],
    ids=["empty-list", "list", "string", "number", "null"],
)
def test_json_that_is_not_an_object_is_400(api, conversation, body):
    before = state()

    response = api.post(send_url(conversation), json.dumps(body), content_type="application/json")

    assert_json_error(response, 400, "invalid_request")
    assert state() == before


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"hello"),
        ("application/xml", b"<content>hi</content>"),
        ("application/octet-stream", b"\x00\x01"),
    ],
)
def test_an_unsupported_content_type_is_415_json(api, conversation, content_type, body):
    before = state()

    response = api.post(send_url(conversation), body, content_type=content_type)

    assert_json_error(response, 415, "unsupported_media_type")
    assert state() == before


def test_a_form_encoded_send_is_judged_like_json(api, conversation):
    """DRF parses forms too; a form with no model is a field error, not a crash."""
    before = state()

    response = api.post(send_url(conversation), {"content": "hi"})

    error = assert_json_error(response, 400, "invalid_request")
    assert "model" in error["fields"]
    assert state() == before


# --- fields with the wrong values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"content": "hi", "model": "no-such-model"}, "unknown_model"),
        ({"content": "hi", "model": ""}, "invalid_request"),
        ({"content": "hi", "model": "m" * 61}, "invalid_request"),
        ({"content": "hi", "model": ["demo"]}, "invalid_request"),
        ({"content": "hi", "model": None}, "invalid_request"),
        ({"content": {"text": "hi"}, "model": "demo"}, "invalid_request"),
        ({"content": "nul \x00 byte", "model": "demo"}, "invalid_request"),
        ({"content": "hi", "model": "demo", "attachments": "not-a-list"}, "invalid_request"),
        ({"content": "hi", "model": "demo", "attachments": [{"type": "image", "url": "javascript:alert(1)"}]}, None),
        ({"content": "hi", "model": "demo", "attachments": [{"type": "image", "url": "\x00"}]}, None),
        ({"content": "hi", "model": "demo", "attachments": [None]}, None),
    ],
    ids=[
        "unknown-model",
        "empty-model",
        "long-model",
        "model-list",
        "model-null",
        "content-object",
        "nul-in-content",
        "attachments-string",
        "attachment-javascript-url",
        "attachment-nul",
        "attachment-null",
    ],
)
def test_a_send_with_wrong_values_is_400_and_holds_nothing(api, conversation, payload, code):
    before = state()

    response = api.post(send_url(conversation), payload, format="json")

    assert_json_error(response, 400, code)
    assert state() == before


@pytest.mark.parametrize(
    "amount",
    [
        "-5",
        "-0.01",
        "0",
        "0.999",
        "5.001",
        "1e999999999",
        "-1e999999999",
        "NaN",
        "Infinity",
        "sNaN",
        "0x10",
        "",
        "   ",
        "5 dollars",
        "1000.01",
        -5,
        5.555,
        True,
        None,
        [5],
        {"usd": 5},
    ],
)
def test_a_topup_amount_outside_the_rules_is_400_json_and_starts_nothing(api, amount):
    before = state()

    response = api.post("/api/v1/topups", {"amount_usd": amount}, format="json")

    assert_json_error(response, 400)
    assert state() == before


@pytest.mark.parametrize("amount", ["-5", "0.001", "1e999999999", "NaN", "abc"])
def test_a_topup_page_amount_outside_the_rules_is_400_next_to_the_field(alice_client, amount):
    before = state()

    response = alice_client.post("/wallet/topup/", {"amount_usd": amount})

    assert response.status_code == 400
    assert b'aria-invalid="true"' in response.content
    assert state() == before


@pytest.mark.parametrize(
    "payload",
    [{"title": "t" * 201}, {"title": None}, {"title": ["a"]}, {"title": "nul \x00"}],
    ids=["too-long", "null", "list", "nul"],
)
def test_a_bad_title_is_400_and_renames_nothing(api, conversation, payload):
    before = state()

    create = api.post("/api/v1/conversations", payload, format="json")
    rename = api.patch(f"/api/v1/conversations/{conversation.pk}", payload, format="json")

    assert_json_error(create, 400, "invalid_request")
    assert_json_error(rename, 400, "invalid_request")
    assert state() == before


# --- ids: unknown, too large for the database, another user's ------------------------------


BIG = str(2**63)  # one past the largest signed 64-bit integer
HUGE = "9" * 40


@pytest.mark.parametrize("ident", ["0", "999999", BIG, HUGE])
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("get", "/api/v1/conversations/{}"),
        ("patch", "/api/v1/conversations/{}"),
        ("delete", "/api/v1/conversations/{}"),
        ("post", "/api/v1/conversations/{}/messages"),
        ("get", "/api/v1/messages/{}"),
        ("get", "/api/v1/messages/{}/stream"),
        ("post", "/api/v1/messages/{}/cancel"),
        ("post", "/api/v1/messages/{}/retry"),
    ],
)
def test_an_unknown_or_oversized_id_is_404_json(api, conversation, method, template, ident):
    before = state()

    response = getattr(api, method)(template.format(ident), {"content": "hi", "model": "demo"}, format="json")

    assert_json_error(response, 404, "not_found")
    assert state() == before


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/nope",
        "/api/v1/conversations/abc",
        "/api/v1/messages/-1",
        "/api/v1/messages/1.5/cancel",
        "/api/v1/conversations/1/nope",
        "/api/v2/wallet",
        "/api/",
    ],
)
def test_an_api_url_that_does_not_resolve_is_404_json(api, api_client, url):
    before = state()

    assert_json_error(api.get(url), 404, "not_found")
    assert_json_error(api.post(url, {"title": "x"}, format="json"), 404, "not_found")
    assert_json_error(api_client.get(url), 404, "not_found")  # anonymous too
    assert state() == before


def test_a_page_that_does_not_resolve_is_still_an_html_404(alice_client):
    response = alice_client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_an_api_crash_is_a_json_500(api, monkeypatch):
    def crash(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("wallet.api.wallet_summary", crash)
    api.raise_request_exception = False

    response = api.get("/api/v1/wallet")

    error = assert_json_error(response, 500, "server_error")
    assert "boom" not in error["message"]


@pytest.mark.parametrize("ident", ["999999", BIG, HUGE])
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("get", "/chat/c/{}/"),
        ("get", "/chat/m/{}/"),
        ("get", "/wallet/topup/{}/pay/"),
        ("post", "/wallet/topup/{}/pay/"),
        ("get", "/wallet/topup/{}/done/"),
    ],
)
def test_an_unknown_or_oversized_id_in_a_page_is_404(alice_client, method, template, ident):
    before = state()

    response = getattr(alice_client, method)(template.format(ident))

    assert response.status_code == 404
    assert state() == before


def test_another_users_objects_are_404_and_untouched(api, alice, bob, conversation):
    """Bob, holding Alice's ids, learns nothing and changes nothing."""
    send = api.post(send_url(conversation), {"content": "[demo:tokens=3] hi", "model": "demo"}, format="json")
    assert send.status_code == 202
    reply_id = send.json()["id"]
    topup = api.post("/api/v1/topups", {"amount_usd": "5"}, format="json").json()["id"]
    funded_wallet(bob, START)
    as_bob = APIClient()
    as_bob.force_login(bob)
    before = state()

    calls = [
        ("get", f"/api/v1/conversations/{conversation.pk}"),
        ("patch", f"/api/v1/conversations/{conversation.pk}"),
        ("delete", f"/api/v1/conversations/{conversation.pk}"),
        ("post", send_url(conversation)),
        ("get", f"/api/v1/messages/{reply_id}"),
        ("get", f"/api/v1/messages/{reply_id}/stream"),
        ("post", f"/api/v1/messages/{reply_id}/cancel"),
        ("post", f"/api/v1/messages/{reply_id}/retry"),
    ]
    for method, url in calls:
        response = getattr(as_bob, method)(url, {"title": "mine", "content": "hi", "model": "demo"}, format="json")
        assert_json_error(response, 404, "not_found")
    page = Client()
    page.force_login(bob)
    for method, url in [
        ("get", f"/chat/c/{conversation.pk}/"),
        ("get", f"/chat/m/{reply_id}/"),
        ("get", f"/wallet/topup/{topup}/pay/"),
        ("post", f"/wallet/topup/{topup}/pay/"),
        ("get", f"/wallet/topup/{topup}/done/"),
    ]:
        assert getattr(page, method)(url).status_code == 404, url
    assert state() == before
    assert Topup.objects.get(pk=topup).credited_at is None


# --- CSRF on session-authenticated writes -----------------------------------------------------


@pytest.fixture
def strict_api(alice, chat_catalog) -> APIClient:  # noqa: F811
    funded_wallet(alice, START)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("post", "/api/v1/conversations"),
        ("patch", "/api/v1/conversations/{conversation}"),
        ("delete", "/api/v1/conversations/{conversation}"),
        ("post", "/api/v1/conversations/{conversation}/messages"),
        ("post", "/api/v1/messages/{reply}/cancel"),
        ("post", "/api/v1/messages/{reply}/retry"),
        ("post", "/api/v1/topups"),
        ("post", "/api/v1/route"),
    ],
)
def test_a_session_api_write_without_csrf_is_403_json(strict_api, alice, conversation, method, template):
    reply = Message.objects.create(conversation=conversation, role="assistant", status="failed", error_code="x")
    url = template.format(conversation=conversation.pk, reply=reply.pk)
    before = state()

    response = getattr(strict_api, method)(
        url, {"title": "x", "content": "hi", "model": "demo", "amount_usd": "5"}, format="json"
    )

    assert_json_error(response, 403, "csrf_failed")
    assert state() == before


def test_a_session_api_write_with_the_csrf_token_passes(strict_api, alice):
    page = strict_api.get("/chat/")
    token = page.cookies["csrftoken"].value

    response = strict_api.post("/api/v1/conversations", {"title": "ok"}, format="json", HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 201


def test_a_key_authenticated_write_needs_no_csrf(alice, chat_catalog):  # noqa: F811
    _, secret = ApiKey.issue(user=alice, name="k")
    client = APIClient(enforce_csrf_checks=True)

    response = client.post(
        "/api/v1/conversations", {"title": "k"}, format="json", HTTP_AUTHORIZATION=f"Bearer {secret}"
    )

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/wallet/topup/", {"amount_usd": "5"}),
        ("/wallet/topup/{topup}/pay/", {}),
        ("/accounts/profile/keys/", {"name": "x"}),
        ("/accounts/profile/keys/{key}/revoke/", {}),
        ("/accounts/profile/delete/", {"password": "correct horse battery staple"}),
        ("/accounts/logout/", {}),
    ],
)
def test_a_page_form_without_csrf_is_403(alice, url, data):
    from wallet.topups import topup_create

    topup = topup_create(user=alice, amount_cents=500, base_url="http://testserver/")
    key, _ = ApiKey.issue(user=alice, name="kept")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    before = state()

    response = client.post(url.format(topup=topup.pk, key=key.prefix), data)

    assert response.status_code == 403
    assert state() == before
    assert "_auth_user_id" in client.session
    alice.refresh_from_db()
    assert alice.is_active


# --- an expired session ---------------------------------------------------------------------------


def expire_sessions() -> None:
    """What the server does when a session runs out: the row is past its expiry date."""
    Session.objects.update(expire_date=timezone.now() - dt.timedelta(seconds=1))


def test_an_expired_session_cannot_write_through_the_api(alice, conversation, chat_catalog):  # noqa: F811
    funded_wallet(alice, START)
    client = APIClient()
    client.force_login(alice)
    assert client.get("/api/v1/wallet").status_code == 200
    expire_sessions()
    before = state()

    for method, url, data in [
        ("post", send_url(conversation), {"content": "hi", "model": "demo"}),
        ("post", "/api/v1/conversations", {"title": "late"}),
        ("delete", f"/api/v1/conversations/{conversation.pk}", None),
        ("post", "/api/v1/topups", {"amount_usd": "5"}),
        ("get", "/api/v1/wallet", None),
    ]:
        response = getattr(client, method)(url, data, format="json")
        assert_json_error(response, 401, "not_authenticated")
    assert state() == before


def test_an_expired_session_cannot_submit_page_forms(alice):
    client = Client()
    client.force_login(alice)
    ApiKey.issue(user=alice, name="kept")
    expire_sessions()
    before = state()

    for url, data in [
        ("/wallet/topup/", {"amount_usd": "5"}),
        ("/accounts/profile/keys/", {"name": "late"}),
        ("/accounts/profile/delete/", {"password": "correct horse battery staple"}),
    ]:
        response = client.post(url, data)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next="), response["Location"]
    assert state() == before
    alice.refresh_from_db()
    assert alice.is_active
