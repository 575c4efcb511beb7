from __future__ import annotations

import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun, worker_ready

from panels.logging import request_id_var

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panels.settings")

app = Celery("panels")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _start_heartbeat(sender: object = None, **kwargs: object) -> None:
    from panels import heartbeat

    heartbeat.start(getattr(sender, "hostname", None))


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
