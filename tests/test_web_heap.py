"""The web process's garbage collector after start-up (panels/asgi.py: settle_heap)."""

from __future__ import annotations

import gc
import importlib

import pytest


@pytest.fixture
def asgi(monkeypatch):
    monkeypatch.setattr("chat.router.warm", lambda: 0.0)  # no encoder to load here
    return importlib.import_module("panels.asgi")


@pytest.fixture
def gc_state():
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_what_start_up_made_is_frozen_out_of_the_collections(asgi, gc_state, settings):
    settings.WEB_GC_FREEZE, settings.WEB_GC_THRESHOLDS = True, []
    threshold = gc.get_threshold()
    asgi.settle_heap()
    assert gc.get_freeze_count() > 10_000  # Django, the URL patterns, the models...
    assert gc.get_threshold() == threshold


def test_the_thresholds_and_no_freeze_are_the_operators_choice(asgi, gc_state, settings):
    settings.WEB_GC_FREEZE, settings.WEB_GC_THRESHOLDS = False, [5000, 20, 30]
    asgi.settle_heap()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == (5000, 20, 30)
