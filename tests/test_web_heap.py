"""The web process's heap after start-up (panels/asgi.py: settle_heap)."""

from __future__ import annotations

import gc
import importlib
import sys

import pytest


@pytest.fixture
def asgi(monkeypatch):
    monkeypatch.setattr("chat.router.warm", lambda: 0.0)  # no encoder to load here
    module = importlib.import_module("panels.asgi")
    gc.unfreeze()
    yield module
    gc.unfreeze()  # the test process collects as usual


def test_what_start_up_made_is_frozen_out_of_the_collections(asgi):
    asgi.settle_heap()
    assert "chat.api" in sys.modules  # the URL patterns' views, loaded before the freeze
    assert gc.get_freeze_count() > 10_000  # Django, the URL patterns, the models...
