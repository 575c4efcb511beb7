"""The worker's start-up objects are frozen out of the garbage collector's walks (panels/celery.py)."""

from __future__ import annotations

import gc


def test_the_worker_freezes_what_it_built_to_start_so_collections_skip_it():
    from panels.celery import _freeze_startup_objects

    gc.unfreeze()
    try:
        _freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000  # Django, Celery and the SDKs, all loaded here
        assert len(gc.get_objects(generation=2)) < gc.get_freeze_count() / 10
    finally:
        gc.unfreeze()
