"""Celery tasks for chat. They take ids and call services."""

from __future__ import annotations

import datetime as dt
import random
import time

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from chat import worker

# Publishing to a broker that is down fails within about a second, so a send can
# answer 503 instead of hanging the request.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


@shared_task(
    bind=True,
    name="chat.message_run",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,  # bounded by time instead: `retry_after_database_error`
)
def message_run(
    self,
    message_id: int,
    lost_claims: list[str] | None = None,
    unreachable_since: float | None = None,
    started_at: str | None = None,  # one lost claim, as retries queued by earlier versions carry it
) -> None:
    # acks_late: a worker that dies mid-reply leaves the task to be delivered again;
    # that delivery finds the reply no longer queued and does nothing (claims are a
    # compare-and-swap), and the sweep fails the reply once its hold runs out.
    marks = [*(lost_claims or ()), *([started_at] if started_at else [])]
    try:
        worker.message_run(message_id=message_id, lost_claims=tuple(dt.datetime.fromisoformat(m) for m in marks))
    except (OperationalError, InterfaceError) as exc:
        # A database that is unreachable (a restart, a failover): try again shortly
        # rather than leave the reply queued until its hold expires.
        plan = retry_after_database_error(
            exc, message_id=message_id, retries=self.request.retries, unreachable_since=unreachable_since
        )
        if plan is None:
            raise
        countdown, kwargs = plan
        raise self.retry(args=(), kwargs=kwargs, countdown=countdown, exc=exc) from exc


def retry_after_database_error(
    exc: Exception, *, message_id: int, retries: int, unreachable_since: float | None, now: float | None = None
) -> tuple[float, dict] | None:
    """When and how `message_run` tries again after a database error; None: it gives up.

    It tries for as long as the reply could still start (its hold's time limit less the
    settle margin, counted from the first error: later than the hold's own start, so
    never shorter), backing off 1, 2, 4, then 8 s (each shortened by up to half, so
    replies queued together don't all come back at once, but never to nothing: a count
    of quick retries could all fall within one restart). A claim whose answer was lost is
    retried with the marks of every such claim, so the retry takes the reply again if one
    of them committed.
    """
    now = time.time() if now is None else now
    since = now if unreachable_since is None else unreachable_since
    if now - since >= settings.HOLD_TTL_SECONDS - worker.DEADLINE_MARGIN_SECONDS:
        return None
    kwargs: dict = {"message_id": message_id, "unreachable_since": since}
    if isinstance(exc, worker.ClaimUnanswered):
        kwargs["lost_claims"] = [mark.isoformat() for mark in exc.lost_claims]
    return min(8.0, 2.0**retries) * random.uniform(0.5, 1.0), kwargs


@shared_task(name="chat.messages_fail_stale", ignore_result=True)
def messages_fail_stale() -> int:
    return worker.messages_fail_stale()


def message_enqueue(*, message_id: int) -> None:
    from chat import publish

    if publish.available(message_run.app):  # one LPUSH of the same message (chat/publish.py)
        publish.publish(message_run.app, message_run.name, (message_id,), retry_policy=PUBLISH_RETRY_POLICY)
        return
    message_run.apply_async((message_id,), retry=True, retry_policy=PUBLISH_RETRY_POLICY)
