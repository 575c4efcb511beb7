"""PANELS_ENV=production refuses to start with unsafe settings, and passes `check --deploy` with safe ones.

Settings are read once per process, so each case starts a fresh Python.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SAFE = {
    "PANELS_ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "DEBUG": "false",
    "ALLOWED_HOSTS": "panels.example.com",
    # check --deploy never connects: port 1 proves no live database is needed.
    "DATABASE_URL": "postgres://u@127.0.0.1:1/x",
    "STRIPE_SECRET_KEY": "sk_live_" + secrets.token_hex(12),
    "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
    "TOPUPS_ENABLED": None,
}

# Anything in the caller's environment that would change what the settings see.
_SCRUB = {
    "PANELS_ENV",
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "BEHIND_TLS_PROXY",
    "DJANGO_SETTINGS_MODULE",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "TOPUPS_ENABLED",
}

NAMED = ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "DATABASE_URL", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET")


def named(name: str, text: str) -> bool:
    """Whether `text` names the setting (SECRET_KEY is not named by "STRIPE_SECRET_KEY must")."""
    return re.search(rf"(?<![A-Z_]){name} must", text) is not None


def run(args: list[str], **env: str | None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    merged = {**SAFE, **env}
    environ.update({k: v for k, v in merged.items() if v is not None})
    environ["DJANGO_SETTINGS_MODULE"] = "panels.settings"
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120, check=False
    )


def manage(*args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    return run(["manage.py", *args], **env)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        pytest.param({"SECRET_KEY": None}, "SECRET_KEY must be set", id="default-secret-key"),
        pytest.param({"SECRET_KEY": "too-short-but-random-3f9a"}, "SECRET_KEY must be set", id="short-secret-key"),
        pytest.param({"DEBUG": "true"}, "DEBUG must be off", id="debug-on"),
        pytest.param({"DEBUG": None}, None, id="debug-unset-defaults-off"),
        pytest.param({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS must list", id="no-allowed-hosts"),
        pytest.param({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS must list the site's host names, not '*'", id="wildcard"),
        pytest.param({"DATABASE_URL": None}, "DATABASE_URL must point at PostgreSQL", id="no-database-url"),
        pytest.param(
            {"DATABASE_URL": "sqlite:////tmp/panels.sqlite3"}, "DATABASE_URL must point at PostgreSQL", id="sqlite-url"
        ),
        # Without Stripe the demo checkout would credit wallets for nothing.
        pytest.param({"STRIPE_SECRET_KEY": None}, "STRIPE_SECRET_KEY must be set", id="no-stripe-key"),
        # Without the webhook secret refunds and lost disputes would never be taken back.
        pytest.param({"STRIPE_WEBHOOK_SECRET": None}, "STRIPE_WEBHOOK_SECRET must be set", id="no-webhook-secret"),
        pytest.param({"STRIPE_SECRET_KEY": ""}, "STRIPE_SECRET_KEY must be set", id="empty-stripe-key"),
        pytest.param({"TOPUPS_ENABLED": "true", "STRIPE_WEBHOOK_SECRET": None}, "STRIPE_WEBHOOK_SECRET", id="on"),
        pytest.param(
            {"TOPUPS_ENABLED": "false", "STRIPE_SECRET_KEY": None, "STRIPE_WEBHOOK_SECRET": None},
            None,
            id="topups-off-needs-no-stripe",
        ),
    ],
)
def test_production_start_up_names_the_unsafe_setting(env: dict[str, str | None], problem: str | None) -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)

    if problem is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "Unsafe production settings (PANELS_ENV=production)" in result.stderr
    assert problem in result.stderr
    # Only the one unsafe value is named, so the message points at the fix.
    others = set(NAMED) - {problem.split()[0]}
    last_line = result.stderr.strip().splitlines()[-1]
    for name in others:
        assert not named(name, last_line), last_line


def test_every_problem_is_named_at_once() -> None:
    result = manage(
        "check",
        SECRET_KEY=None,
        DEBUG="true",
        ALLOWED_HOSTS=None,
        DATABASE_URL=None,
        STRIPE_SECRET_KEY=None,
        STRIPE_WEBHOOK_SECRET=None,
    )

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    for name in NAMED:
        assert named(name, last_line), last_line


def test_plain_django_setup_fails_too() -> None:
    """Not only manage.py: any process that loads the settings (wsgi, asgi, celery) stops."""
    result = run(["-c", "import django; django.setup(); print('started')"], SECRET_KEY=None)

    assert result.returncode != 0
    assert "started" not in result.stdout
    assert "SECRET_KEY must be set" in result.stderr


def test_safe_production_settings_pass_check_deploy_without_warnings() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_safe_production_settings_behind_a_proxy_pass_too() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", BEHIND_TLS_PROXY="true")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_production_values_are_the_secure_ones() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS, s.X_FRAME_OPTIONS)"
    )
    result = run(["-c", code])

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True", "True", "31536000", "DENY"]
