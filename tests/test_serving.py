"""How the site is served: DEBUG off unless asked for, the site's own error pages,
readable API docs at /api/docs/ from files shipped with the project (no CDN)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _debug_setting(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "PANELS_ENV"}}
    environ.update(env, DJANGO_SETTINGS_MODULE="panels.settings")
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_debug_is_off_locally_unless_asked_for():
    assert _debug_setting() == "False"
    assert _debug_setting(DEBUG="1") == "True"


@pytest.mark.django_db
def test_an_unknown_page_is_the_sites_own_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "Page not found" in body and "Back to the home page" in body
    assert "URLconf" not in body


@pytest.mark.django_db
def test_an_unknown_api_url_is_a_json_404(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_api_docs_are_swagger_ui_from_local_files(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "swagger-ui" in body
    assert "cdn" not in body.lower() and "https://" not in body
    # Its start-up script is a file of its own (the CSP allows no inline script) and
    # points at the schema.
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert "/api/schema/" in script.content.decode()
    assert "script-src 'self';" in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_the_account_pages_http_api_link_opens_the_docs(alice_client):
    body = alice_client.get("/accounts/profile/").content.decode()
    assert 'href="/api/docs/">HTTP API</a>' in body
