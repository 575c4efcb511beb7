from __future__ import annotations

import gc
import os

from celery import Celery
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun, worker_ready

from panels.logging import request_id_var

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panels.settings")

app = Celery("panels")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _keep_project_logging(**kwargs: object) -> None:
    # With a receiver here, Celery leaves logging alone. Otherwise it replaces the root
    # handler with its own text format at --loglevel: no JSON, no request ids, and
    # LOG_LEVEL ignored in the worker.
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@worker_ready.connect
def _start_heartbeat(sender: object = None, **kwargs: object) -> None:
    from panels import heartbeat

    heartbeat.start(getattr(sender, "hostname", None))


@worker_ready.connect
def _freeze_startup_objects(**kwargs: object) -> None:
    # Everything the worker built to start (Django, Celery, the SDKs: about 300,000
    # objects) lives as long as the process. Left to the collector, each full collection
    # walks all of it with the GIL held, stalling every reply the worker streams (221 ms
    # once in a bench/compare.sh run on a loaded machine: docs/chat.md). Frozen,
    # collections walk only what was made since.
    gc.collect()
    gc.freeze()


@before_task_publish.connect
def _carry_request_id(headers: dict | None = None, **kwargs: object) -> None:
    if headers is not None:
        headers.setdefault("request_id", request_id_var.get())


@task_prerun.connect
def _restore_request_id(task: object = None, **kwargs: object) -> None:
    request = getattr(task, "request", None)
    request_id = getattr(request, "request_id", None) or (getattr(request, "headers", None) or {}).get("request_id")
    request_id_var.set(request_id or "-")


@task_postrun.connect
def _clear_request_id(**kwargs: object) -> None:
    request_id_var.set("-")
