"""Who may reach what: every URL pattern of the project, checked or explicitly public.

Each pattern is enumerated from the URL resolver. A page needs a login (anonymous: a
redirect to the login page), an API endpoint needs a session or a key (anonymous: a
401 JSON error), and another user's object is a 404 that changes nothing. A new URL
that is neither in ACCESS nor allow-listed as public fails `test_every_url_is_checked_or_public`:
add it to one of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from chat.models import Conversation, Message
from panels.models import ApiKey
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold, Topup
from wallet.topups import topup_create

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
# Alice's words, which nothing served to Bob may contain.
SECRET = "alice-private-7c1e"


@dataclass(frozen=True)
class Access:
    kind: str  # "page": login redirect when anonymous; "api": 401 JSON; "openai": 401 in OpenAI's error shape
    methods: tuple[str, ...] = ()  # pages: the methods the view answers; APIs: read from the view
    owns: str | None = None  # the URL's id names one of the user's objects


# Every URL that needs a login, by name. Its keyword arguments name Alice's objects.
ACCESS: dict[str, Access] = {
    # pages
    "account_profile": Access("page", ("get",)),
    "account_delete": Access("page", ("get", "post")),
    "apikey_create": Access("page", ("post",)),
    "apikey_revoke": Access("page", ("post",), owns="apikey"),
    "apikey_limit": Access("page", ("post",), owns="apikey"),
    "wallet": Access("page", ("get",)),
    "wallet_export": Access("page", ("get",)),
    "wallet_alert": Access("page", ("post",)),
    "autotopup": Access("page", ("post",)),
    "autotopup_card": Access("page", ("post",)),
    "autotopup_card_done": Access("page", ("get",)),
    "autotopup_card_remove": Access("page", ("post",)),
    "autotopup_resume": Access("page", ("post",)),
    "topup": Access("page", ("get", "post")),
    "topup_demo_pay": Access("page", ("get", "post"), owns="topup"),
    "topup_done": Access("page", ("get",), owns="topup"),
    "chat": Access("page", ("get",)),
    "chat_conversation": Access("page", ("get",), owns="conversation"),
    "message_goto": Access("page", ("get",), owns="message"),
    "usage": Access("page", ("get",)),
    # API v1
    "api_wallet": Access("api"),
    "api_wallet_entries": Access("api"),
    "api_topups": Access("api"),
    "api_autotopup": Access("api"),
    "api_autotopup_card": Access("api"),
    "api_models": Access("api"),
    "api_conversations": Access("api"),
    "api_conversation": Access("api", owns="conversation"),
    "api_message_send": Access("api", owns="conversation"),
    "api_message": Access("api", owns="message"),
    "api_message_stream": Access("api", owns="message"),
    "api_message_cancel": Access("api", owns="message"),
    "api_message_retry": Access("api", owns="message"),
    "api_message_regenerate": Access("api", owns="message"),
    "api_message_edit": Access("api", owns="message"),
    "api_message_escalate": Access("api", owns="message"),
    "api_conversation_export": Access("api", owns="conversation"),
    "api_route": Access("api"),
    "api_keys": Access("api"),
    # the OpenAI-compatible API: a Panels key only
    "v1_chat_completions": Access("openai", ("post",)),
    "v1_models": Access("openai", ("get",)),
}

# Public on purpose, each for a reason; `test_public_urls_answer_anonymous_visitors` checks them.
PUBLIC = {
    "home": "the landing page",
    "pricing": "the price list and calculator",
    "healthz": "load balancers probe it without credentials",
    "api_schema": "the OpenAPI description of the API",
    "api_docs": "the API's reference pages, drawn from the public schema",
    "api_stripe_webhook": "Stripe calls it; a signature, not a login, authenticates it",
}
# Whole modules and namespaces that bring their own access rules.
PUBLIC_MODULES = ("allauth.",)  # accounts/*: login, signup, password reset, email confirmation
PUBLIC_NAMESPACES = ("admin",)  # staff only, by Django admin's own login (checked below)


@dataclass(frozen=True)
class Route:
    route: str
    name: str
    namespace: str
    module: str
    view: object = field(repr=False)


def all_routes() -> list[Route]:
    def walk(patterns: list, prefix: str, namespace: str) -> Iterator[Route]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = ":".join(filter(None, [namespace, pattern.namespace or ""]))
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            elif isinstance(pattern, URLPattern):
                callback = pattern.callback
                view = getattr(callback, "cls", None) or getattr(callback, "view_class", None) or callback
                yield Route(
                    route=prefix + str(pattern.pattern),
                    name=pattern.name or "",
                    namespace=namespace,
                    module=callback.__module__,
                    view=view,
                )

    return list(walk(get_resolver().url_patterns, "", ""))


def api_methods(name: str) -> tuple[str, ...]:
    route = next(r for r in all_routes() if r.name == name and not r.namespace)
    return tuple(m for m in ("get", "post", "put", "patch", "delete") if hasattr(route.view, m))


# --- the inventory -------------------------------------------------------------------------


def test_every_url_is_checked_or_public():
    unaccounted = []
    for route in all_routes():
        if route.module.startswith(PUBLIC_MODULES) or route.namespace.split(":")[0] in PUBLIC_NAMESPACES:
            continue
        if route.name in ACCESS or route.name in PUBLIC:
            continue
        unaccounted.append(f"{route.route!r} (name={route.name!r}, view={route.module})")
    assert not unaccounted, (
        "URLs that are neither access-checked nor allow-listed as public; add each to ACCESS or PUBLIC "
        "in tests/test_security_access.py:\n" + "\n".join(unaccounted)
    )


def test_every_entry_names_a_real_url():
    names = {r.name for r in all_routes() if not r.namespace}
    assert not (set(ACCESS) | set(PUBLIC)) - names


def test_every_api_url_is_under_api_and_every_api_view_is_checked_as_api():
    for route in all_routes():
        if route.route.startswith("api/") and route.name in ACCESS:
            assert ACCESS[route.name].kind == "api", route
            assert api_methods(route.name), route


# --- Alice's objects ------------------------------------------------------------------------


@dataclass
class Owned:
    conversation: Conversation
    message: Message
    topup: Topup
    apikey: ApiKey

    def kwargs_for(self, name: str) -> dict:
        owns = ACCESS[name].owns if name in ACCESS else None
        if owns is None:
            return {}
        value = {
            "conversation": self.conversation.pk,
            "message": self.message.pk,
            "topup": self.topup.pk,
            "apikey": self.apikey.prefix,
        }[owns]
        route = next(r for r in all_routes() if r.name == name and not r.namespace)
        argument = route.route.rsplit("<", 1)[1].split(">")[0].split(":")[-1]
        return {argument: value}


@pytest.fixture(autouse=True)
def fresh_throttles(db) -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def nothing_is_queued(monkeypatch) -> None:
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: None)


@pytest.fixture
def owned(alice, chat_catalog) -> Owned:  # noqa: F811
    funded_wallet(alice, 1_000_000)
    conversation = Conversation.objects.create(user=alice, title=f"{SECRET} title")
    Message.objects.create(conversation=conversation, role="user", content=f"{SECRET} words")
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="failed",
        content="",
        error_code="provider_error",
        error_message="failed",
        requested_model="demo",
        model=chat_catalog,
    )
    topup = topup_create(user=alice, amount_cents=500, base_url="http://testserver/")
    key, _ = ApiKey.issue(user=alice, name=f"{SECRET} key")
    return Owned(conversation=conversation, message=reply, topup=topup, apikey=key)


def state() -> dict:
    return {
        "entries": Entry.objects.count(),
        "holds": list(Hold.objects.order_by("pk").values_list("pk", "status")),
        "messages": list(Message.objects.order_by("pk").values_list("pk", "status", "content")),
        "conversations": list(Conversation.objects.order_by("pk").values_list("pk", "title")),
        "topups": list(Topup.objects.order_by("pk").values_list("pk", "status", "credited_at")),
        "accounts": list(Account.objects.order_by("pk").values_list("pk", "balance", "held")),
        "keys": list(ApiKey.objects.order_by("pk").values_list("pk", "revoked_at")),
    }


BODY = {"title": "mine now", "content": "hi", "model": "demo", "amount_usd": "5", "name": "k", "confirm": "x"}


def call(client: Client, method: str, url: str):
    if method == "get":
        return client.get(url)
    if isinstance(client, APIClient):
        return getattr(client, method)(url, BODY, format="json")
    return getattr(client, method)(url, BODY)


def cases(kind: str, *, owned_only: bool = False) -> list:
    params = []
    for name, access in ACCESS.items():
        if access.kind != kind or (owned_only and access.owns is None):
            continue
        methods = api_methods(name) if kind == "api" else access.methods
        params += [pytest.param(name, method, id=f"{name}-{method}") for method in methods]
    return params


# --- anonymous ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "method"), cases("page"))
def test_anonymous_visitors_are_sent_to_log_in(client, owned, name, method):
    url = reverse(name, kwargs=owned.kwargs_for(name))
    before = state()

    response = call(client, method, url)

    assert response.status_code == 302, (url, response.status_code)
    assert response["Location"].startswith(f"{LOGIN}?next="), response["Location"]
    assert state() == before


@pytest.mark.parametrize(("name", "method"), cases("api"))
def test_anonymous_api_calls_are_401_json(api_client, owned, name, method):
    url = reverse(name, kwargs=owned.kwargs_for(name))
    before = state()

    response = call(api_client, method, url)

    assert response.status_code == 401, (url, response.status_code, response.content[:200])
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content)["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Bearer"
    assert state() == before


@pytest.mark.parametrize(("name", "method"), cases("api"))
def test_a_revoked_or_unknown_key_is_401_on_every_api_url(api_client, owned, name, method):
    url = reverse(name, kwargs=owned.kwargs_for(name))
    owned.apikey.revoke()
    before = state()

    for header in ("Bearer pnl_unknown_key", f"Bearer {owned.apikey.prefix}not-the-secret"):
        api_client.credentials(HTTP_AUTHORIZATION=header)
        response = call(api_client, method, url)
        assert response.status_code == 401, (url, header)
        assert json.loads(response.content)["error"]["code"] in ("authentication_failed", "not_authenticated")
    assert state() == before


@pytest.mark.parametrize(("name", "method"), cases("openai"))
def test_openai_api_needs_a_key_not_a_session(client, alice, owned, name, method):
    """Anonymous, a browser session, an unknown key and a revoked key are all 401, in OpenAI's shape."""
    url = reverse(name)
    owned.apikey.revoke()
    before = state()
    session = Client()
    session.force_login(alice)
    attempts = [
        (client, {}),
        (session, {}),
        (client, {"HTTP_AUTHORIZATION": "Bearer pnl_unknown_key"}),
        (client, {"HTTP_AUTHORIZATION": f"Bearer {owned.apikey.prefix}not-the-secret"}),
    ]
    for who, headers in attempts:
        if method == "get":
            response = who.get(url, **headers)
        else:
            body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
            response = who.post(url, body, content_type="application/json", **headers)
        assert response.status_code == 401, (url, headers, response.status_code)
        error = json.loads(response.content)["error"]
        assert set(error) >= {"message", "type", "code", "param"}, error
    assert state() == before


# --- another user ----------------------------------------------------------------------------------


@pytest.fixture
def bob_page(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.fixture
def bob_api(bob) -> APIClient:
    funded_wallet(bob, 1_000_000)
    _, secret = ApiKey.issue(user=bob, name="bob's key")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.mark.parametrize(("name", "method"), cases("page", owned_only=True))
def test_another_users_object_is_a_404_page(bob_page, owned, name, method):
    url = reverse(name, kwargs=owned.kwargs_for(name))
    before = state()

    response = call(bob_page, method, url)

    assert response.status_code == 404, (url, response.status_code)
    assert SECRET.encode() not in response.content
    assert state() == before


@pytest.mark.parametrize(("name", "method"), cases("api", owned_only=True))
def test_another_users_object_is_a_404_json(bob_api, owned, name, method):
    url = reverse(name, kwargs=owned.kwargs_for(name))
    before = state()

    response = call(bob_api, method, url)

    assert response.status_code == 404, (url, response.status_code, response.content[:200])
    assert json.loads(response.content)["error"]["code"] == "not_found"
    assert SECRET.encode() not in response.content
    assert state() == before


def test_the_owner_reaches_every_owned_url(owned, alice):
    """The 404s above are about ownership, not broken URLs: Alice gets through."""
    page = Client()
    page.force_login(alice)
    api = APIClient()
    api.force_login(alice)
    for name, access in ACCESS.items():
        if access.owns is None:
            continue
        url = reverse(name, kwargs=owned.kwargs_for(name))
        if access.kind == "page":
            method = access.methods[0]
            response = call(page, method, url)
        else:
            method = "get" if "get" in api_methods(name) else api_methods(name)[0]
            if name == "api_message_stream":
                continue  # a failed reply's stream is read in the chat API tests
            response = call(api, method, url)
        assert response.status_code != 404, (name, method, url)
        assert response.status_code < 500, (name, method, url)


# Where Stripe sends the user back to: it completes the set-up it names and redirects.
RETURN_PAGES = {"autotopup_card_done"}


def own_lists() -> list[str]:
    """URLs with no id that show the user's own things: Bob's must hold nothing of Alice's."""
    names = []
    for name, access in ACCESS.items():
        if access.kind == "openai":
            continue  # no session reaches it; its lists are checked in tests/test_v1_*.py
        if name in RETURN_PAGES:
            continue  # shows nothing itself: it redirects to the wallet (tests/test_autotopup_stripe.py)
        if access.owns is None and "get" in (api_methods(name) if access.kind == "api" else access.methods):
            names.append(name)
    return names


@pytest.mark.parametrize("name", own_lists())
def test_lists_and_pages_show_bob_nothing_of_alices(bob, owned, name):
    client = APIClient() if ACCESS[name].kind == "api" else Client()
    client.force_login(bob)

    response = client.get(reverse(name))

    assert response.status_code == 200, name
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert SECRET.encode() not in body
    # Alice's objects are there to be missed: she sees them.
    client.force_login(owned.conversation.user)
    mine = client.get(reverse(name))
    mine_body = b"".join(mine.streaming_content) if mine.streaming else mine.content
    if name in ("chat", "account_profile", "api_conversations"):
        assert SECRET.encode() in mine_body, name


# --- public URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_urls_answer_anonymous_visitors(client, db, name):
    url = reverse(name)

    if name == "api_stripe_webhook":
        response = client.post(url, b"{}", content_type="application/json")
        # No signature: refused by the signature check (or not configured), never a login.
        assert response.status_code in (400, 503)
        assert json.loads(response.content)["error"]["code"] in ("invalid_webhook", "webhook_not_configured")
        return
    response = client.get(url)
    if name == "healthz":
        assert response.status_code in (200, 503)  # 503 when no worker runs; either way it answers
        assert json.loads(response.content)["status"] in ("ok", "fail")
        return
    assert response.status_code == 200, (url, response.status_code)


def test_admin_needs_a_staff_login(client, alice):
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    client.force_login(alice)
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    assert client.get("/admin/wallet/account/").status_code == 302
