"""Celery tasks for chat. They take ids and call services."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from chat import worker

# Publishing to a broker that is down fails within about a second, so a send can
# answer 503 instead of hanging the request.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


@shared_task(
    name="chat.message_run",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # A database that is unreachable when the task starts (a restart, a failover):
    # try again shortly rather than leave the reply queued until its hold expires.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=1,
    retry_backoff_max=8,
    max_retries=6,
)
def message_run(message_id: int) -> None:
    # acks_late: a worker that dies mid-reply leaves the task to be delivered again;
    # that delivery finds the reply no longer queued and does nothing (claims are a
    # compare-and-swap), and the sweep fails the reply once its hold runs out.
    # The same compare-and-swap makes a retry after a database error safe.
    worker.message_run(message_id=message_id)


@shared_task(name="chat.messages_fail_stale", ignore_result=True)
def messages_fail_stale() -> int:
    return worker.messages_fail_stale()


def message_enqueue(*, message_id: int) -> None:
    from chat import publish

    if publish.available(message_run.app):  # one LPUSH of the same message (chat/publish.py)
        publish.publish(message_run.app, message_run.name, (message_id,), retry_policy=PUBLISH_RETRY_POLICY)
        return
    message_run.apply_async((message_id,), retry=True, retry_policy=PUBLISH_RETRY_POLICY)
