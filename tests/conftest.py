"""Shared fixtures: personas (alice, bob), the database cache table, real servers."""

from __future__ import annotations

import os
import uuid

import pytest
from django.core.management import call_command


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        call_command("createcachetable", verbosity=0)
        call_command("load_catalog", verbosity=0)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The real hasher costs about half a second per user on this machine, in every test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_api_cache():
    # The /v1 lookups a web process keeps (openai_api/cache.py) don't outlive a test's rows.
    from chat import streams
    from openai_api import cache

    cache.clear()
    streams._accepted.clear()  # the replies a send left for their first reader (chat/streams.py)


@pytest.fixture(autouse=True)
def _own_rate_limits(settings):
    # Rate-limit counters live in the test run's one Redis: each test counts on its own.
    settings.RATE_LIMIT_PREFIX = f"test-rate:{uuid.uuid4().hex}"


# Django's test client hands back a streaming response whose iterator, once partly read
# and dropped (an SSE reader that stops at `done`), sits in a reference cycle: the cyclic
# garbage collector closes it, and closing sends request_finished, whose reset_urlconf sets
# a ContextVar (asgiref's Local). On Python 3.11 a collection can start inside another
# ContextVar.set (the next request's set_urlconf) and the nested set frees the context
# that outer set is still reading (CPython gh-148891, fixed from 3.12): the test process
# dies of a segmentation fault now and then. So the streams a test opens are kept alive
# and closed after its body, at a call of our own, never by the collector.
_open_streams: list = []


def close_test_client_streams() -> None:
    while _open_streams:
        _open_streams.pop().close()


def _tracked_closing_iterator_wrapper(iterable, close):
    stream = _closing_iterator_wrapper(iterable, close)
    _open_streams.append(stream)
    return stream


from django.test import client as _test_client  # noqa: E402

_closing_iterator_wrapper = _test_client.closing_iterator_wrapper
_test_client.closing_iterator_wrapper = _tracked_closing_iterator_wrapper


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    finally:
        close_test_client_streams()


_DB_FIXTURES = {"db", "transactional_db", "live_server", "django_db_reset_sequences"}


@pytest.fixture(autouse=True)
def _catalog(request):
    # A transactional test empties every table when it ends, the catalog included;
    # reload it for each test that uses the database.
    if _DB_FIXTURES & set(request.fixturenames) or request.node.get_closest_marker("django_db"):
        from chat.models import ModelSpec

        request.getfixturevalue("_django_db_helper")  # the database first, as the test asked for it

        if not ModelSpec.objects.exists():
            call_command("load_catalog", verbosity=0)
    yield


_SYSTEM_ACCOUNTS: dict[str, int] = {}


def _restore_system_accounts() -> None:
    """Put back the system accounts migration 0007 seeded, under their first ids.

    Processes cache these ids (the ledger's fast path; a web server or worker that a
    test suite keeps across tests), and a transactional test's flush deletes the rows:
    restored with the same ids, every cache stays right. They exist before the test's
    own work, so a rolled-back part of it (a hypothesis example) can't take one away.
    """
    from wallet import ledger_sql
    from wallet.models import Account

    if not _SYSTEM_ACCOUNTS:
        _SYSTEM_ACCOUNTS.update(Account.objects.filter(kind=Account.Kind.SYSTEM).values_list("code", "pk"))
    Account.objects.bulk_create(
        [Account(pk=pk, kind=Account.Kind.SYSTEM, code=code) for code, pk in _SYSTEM_ACCOUNTS.items()],
        ignore_conflicts=True,
    )
    ledger_sql.forget_system_accounts(known=_SYSTEM_ACCOUNTS)


@pytest.fixture(autouse=True)
def _ledger_triggers(request):
    # SQLite empties tables after a transactional test with DELETE, which the ledger's
    # immutability trigger refuses: lift it for that flush only, and put it back first
    # thing in every test that uses the database. (PostgreSQL's flush is a TRUNCATE,
    # which row triggers don't see.)
    transactional = bool({"transactional_db", "live_server", "django_db_reset_sequences"} & set(request.fixturenames))
    marker = request.node.get_closest_marker("django_db")
    transactional = transactional or bool(marker and (marker.kwargs.get("transaction") or marker.args[:1] == (True,)))
    uses_db = transactional or bool(marker) or bool(_DB_FIXTURES & set(request.fixturenames))
    from django.db import connection

    if uses_db:
        from wallet import immutability

        request.getfixturevalue("_django_db_helper")
        if connection.vendor == "sqlite":
            immutability.install(connection)
        _restore_system_accounts()
    yield
    if uses_db and transactional and connection.vendor == "sqlite":
        from wallet import immutability

        immutability.drop(connection)


def make_user(email: str, password: str = "correct horse battery staple", verified: bool = True):
    from allauth.account.models import EmailAddress
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=email.split("@")[0], email=email, password=password)
    EmailAddress.objects.create(user=user, email=email, verified=verified, primary=True)
    return user


@pytest.fixture
def alice(db):
    return make_user("alice@example.com")


@pytest.fixture
def bob(db):
    return make_user("bob@example.com")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


def on_postgres() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def test_database_url() -> str:
    """The URL of the test database, for processes (worker, web) the tests start."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True)
def _stop_the_ledger_batcher():
    """The worker settles replies through the process's group commit, whose batches run on
    a connection of their own: close it after each test, so no connection outlives the
    test (and its database)."""
    yield
    from wallet import batching

    batching._batcher.stop()
