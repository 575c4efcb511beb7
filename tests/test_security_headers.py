"""Security headers on every page and API answer, no inline script anywhere, HSTS in production.

Every page comes from the URL inventory (tests/test_security_access.py), so a new page is
checked without being listed here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from panels.models import ApiKey
from tests.conftest import REDIS_URL
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.test_security_access import ACCESS, PUBLIC, SECRET, Owned, all_routes
from tests.test_security_access import owned as owned

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db

# A <script> that runs code: anything but an external file or a JSON data block.
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc\s*=)(?![^>]*type\s*=\s*[\"']application/json)[^>]*>", re.I)
# An inline event handler attribute (onclick=, onload=, ...).
INLINE_HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I)
JAVASCRIPT_URL = re.compile(r"""(?:href|src|action)\s*=\s*["']?\s*javascript:""", re.I)


@pytest.fixture(autouse=True)
def fresh_throttles(db):
    cache.clear()
    yield
    cache.clear()


def assert_csp(response, where: str) -> None:
    csp = response["Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in (p.strip() for p in csp.split(";")) if part}
    assert directives["script-src"] == ["'self'"], where
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, where
    assert directives["object-src"] == ["'none'"], where
    assert directives["frame-ancestors"] == ["'none'"], where


def assert_frame_and_sniff(response, where: str) -> None:
    assert response["X-Frame-Options"] == "DENY", where
    assert response["X-Content-Type-Options"] == "nosniff", where


class _ActiveContent(HTMLParser):
    """The elements and attributes a browser would run, as the browser parses them: model
    text escaped into an attribute value (data-source="&lt;img onerror=...") is not one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: (value or "") for name, value in attrs}
        if tag == "script" and "src" not in values and values.get("type", "") != "application/json":
            self.found.append(f"inline <script> {values}")
        for name, value in values.items():
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action") and value.strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")


def assert_no_inline_script(html: str, where: str) -> None:
    parser = _ActiveContent()
    parser.feed(html)
    parser.close()
    assert not parser.found, (where, parser.found)


def html_pages(owned: Owned) -> list[str]:
    """Every GET page of the project that takes no argument, or takes one of Alice's ids."""
    urls = []
    for route in all_routes():
        if route.route.startswith(("api/", "admin/")) or route.namespace:
            continue
        if route.name in ACCESS and "get" not in ACCESS[route.name].methods:
            continue
        if route.name in PUBLIC and route.name not in ("home", "pricing"):
            continue
        try:
            urls.append(reverse(route.name, kwargs=owned.kwargs_for(route.name)))
        except Exception:
            continue  # allauth's pages with a key in the URL; their forms are checked below
    return sorted(set(urls))


def test_the_page_list_is_the_whole_site(owned):
    pages = html_pages(owned)
    for expected in ("/", "/pricing/", "/chat/", "/wallet/", "/wallet/topup/", "/usage/", "/accounts/login/"):
        assert expected in pages
    assert f"/chat/c/{owned.conversation.pk}/" in pages
    assert len(pages) >= 25


def test_every_html_page_has_the_headers_and_no_inline_script(owned, alice):
    signed_in = Client()
    signed_in.force_login(alice)
    seen = 0
    for url in html_pages(owned):
        for who, client in (("alice", signed_in), ("anonymous", Client())):
            response = client.get(url, follow=True)
            where = f"{who} {url} -> {response.redirect_chain[-1][0] if response.redirect_chain else url}"
            assert response.status_code < 500, where
            if not response.get("Content-Type", "").startswith("text/html"):
                continue
            seen += 1
            assert_csp(response, where)
            assert_frame_and_sniff(response, where)
            content = b"".join(response.streaming_content) if response.streaming else response.content
            assert_no_inline_script(content.decode(), where)
    assert seen >= 40


@pytest.mark.parametrize(
    ("label", "request_kwargs", "status"),
    [
        ("404", {"path": "/no-such-page/"}, 404),
        ("403 csrf", {"path": "/accounts/profile/keys/", "method": "post", "csrf": True}, 403),
        ("413", {"path": "/wallet/topup/", "method": "post", "big": True}, 413),
    ],
)
def test_error_pages_have_the_headers_too(alice, settings, label, request_kwargs, status):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    client = Client(enforce_csrf_checks=request_kwargs.get("csrf", False))
    client.force_login(alice)
    path = request_kwargs["path"]
    if request_kwargs.get("method") == "post":
        data = {"amount_usd": "5", "pad": "p" * 2048} if request_kwargs.get("big") else {"name": "x"}
        response = client.post(path, data)
    else:
        response = client.get(path)

    assert response.status_code == status
    assert_csp(response, label)
    assert_frame_and_sniff(response, label)
    assert_no_inline_script(response.content.decode(), label)


def test_the_rate_limited_page_has_the_headers_too(alice, monkeypatch):
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "topup", "1/min")
    client = Client()
    client.force_login(alice)
    client.post("/wallet/topup/", {"amount_usd": "5"})

    response = client.post("/wallet/topup/", {"amount_usd": "5"})

    assert response.status_code == 429
    assert_csp(response, "429")
    assert_frame_and_sniff(response, "429")
    assert_no_inline_script(response.content.decode(), "429")


def test_api_answers_are_not_sniffed_or_framed(owned, alice):
    _, secret = ApiKey.issue(user=alice, name="headers")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    for url in ("/api/v1/wallet", "/api/v1/conversations", f"/api/v1/messages/{owned.message.pk}", "/api/v1/nope"):
        response = client.get(url)
        assert_frame_and_sniff(response, url)
        assert "Content-Security-Policy" in response, url
    anonymous = Client().get("/api/v1/wallet")
    assert anonymous.status_code == 401
    assert_frame_and_sniff(anonymous, "anonymous api")


def test_model_text_shown_on_a_page_stays_inert(owned, alice):
    from chat.models import Message

    Message.objects.filter(pk=owned.message.pk).update(
        status="done",
        content='<script>alert(1)</script><img src=x onerror="alert(2)"> [x](javascript:alert(3))',
        error_code="",
    )
    client = Client()
    client.force_login(alice)

    page = client.get(f"/chat/c/{owned.conversation.pk}/").content.decode()

    assert SECRET in page
    assert_no_inline_script(page, "chat with hostile model text")


# --- the source: templates and static files ---------------------------------------------------


def source_files() -> list[Path]:
    files = [p for p in (ROOT / "templates").rglob("*.html")]
    files += [p for p in (ROOT / "static").rglob("*") if p.suffix in (".html", ".svg", ".js")]
    for app in ("panels", "chat", "wallet"):
        files += list((ROOT / app / "templates").rglob("*.html")) if (ROOT / app / "templates").exists() else []
    return files


def test_templates_have_no_inline_script_or_handlers():
    checked = 0
    for path in source_files():
        if path.suffix == ".js":
            continue
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        assert not INLINE_SCRIPT.search(text), (where, INLINE_SCRIPT.search(text).group(0))
        assert not INLINE_HANDLER.search(text), (where, INLINE_HANDLER.search(text).group(0))
        assert not JAVASCRIPT_URL.search(text), where
        checked += 1
    assert checked >= 20


def test_scripts_do_not_build_inline_handlers_or_eval():
    scripts = [p for p in source_files() if p.suffix == ".js"]
    assert scripts
    for path in scripts:
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        assert not re.search(r"\beval\s*\(|new\s+Function\s*\(", text), where
        assert not re.search(r"setAttribute\(\s*[\"']on[a-z]+", text), where
        assert not re.search(r"""["'][^"']*\son[a-z]+\s*=[^"']*["']""", text), where


# --- production: HSTS ----------------------------------------------------------------------------

PRODUCTION_ENV = {
    "PANELS_ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "DEBUG": "false",
    "ALLOWED_HOSTS": "panels.example.com",
    # Nothing listens on port 1: the health check reports the database down, quickly.
    "DATABASE_URL": "postgres://u@127.0.0.1:1/x",
    "REDIS_URL": REDIS_URL,
    # Production refuses to start without Stripe keys unless top-ups are off.
    "TOPUPS_ENABLED": "false",
}
_SCRUB = {"SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "BEHIND_TLS_PROXY", "DJANGO_SETTINGS_MODULE"}

PROBE = """
import json, django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="panels.example.com")
secure = client.get("/healthz", secure=True)
plain = client.get("/healthz")
print(json.dumps({
    "secure_status": secure.status_code,
    "secure_headers": dict(secure.headers),
    "plain_status": plain.status_code,
    "plain_location": plain.get("Location", ""),
}))
"""


def test_production_sends_hsts_and_redirects_to_https():
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and k not in PRODUCTION_ENV}
    env.update(PRODUCTION_ENV, DJANGO_SETTINGS_MODULE="panels.settings")
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    headers = seen["secure_headers"]
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert seen["secure_status"] in (200, 503)  # 503: the probe has no database; the headers still go out
    assert seen["plain_status"] == 301
    assert seen["plain_location"] == "https://panels.example.com/healthz"
