"""Queue a reply's task with one Redis command (chat/tasks.py: `message_enqueue`).

`apply_async` through kombu cost a send about 1.5 ms of the web process's CPU under
bench/compare.sh's load (a fresh redis-py client per publish, the connection's `ensure`
wrapper, the exchange look-up), against a tenth of that for the LPUSH it ends in. The
message is still Celery's own: its headers, properties and body come from Celery's
builder (`app.amqp.as_task_v2`, protocol 2, docs.celeryq.dev "Message Protocol"), the
`before_task_publish` signal runs as for any task (it carries the request id), and the
envelope is the one kombu's Redis transport writes (kombu/transport/virtual/base.py:
`prepare_message`, `basic_publish`; kombu/transport/redis.py: `_put`): a JSON object
with the body in base64, LPUSHed to the queue's list, which the worker's BRPOP reads.
tests/test_chat_publish.py checks it against what `apply_async` writes, and the
end-to-end tests run it through a real worker.

Used when the broker is this process's Redis (CELERY_BROKER_URL is REDIS_URL, the
default) and tasks are not run eagerly; otherwise `apply_async` as before. A failed
write is tried again as `apply_async`'s retry policy would (chat/tasks.py), then raises.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import redis
from celery import signals
from django.conf import settings

from panels.redis_client import get_redis


def available(app) -> bool:
    conf = app.conf
    return (
        not conf.task_always_eager
        and conf.broker_url == settings.REDIS_URL
        and conf.broker_url.startswith(("redis://", "rediss://"))
        and not conf.broker_transport_options.get("global_keyprefix")
        and not conf.task_routes
    )


def envelope(app, name: str, args: tuple, *, queue: str) -> bytes:
    """The message `apply_async(args)` would write to `queue`'s list, as bytes."""
    task_id = str(uuid.uuid4())
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id, name, args, {}, reply_to=app.thread_oid, ignore_result=True
    )
    signals.before_task_publish.send(
        sender=name,
        body=body,
        exchange="",
        routing_key=queue,
        headers=headers,
        properties=properties,
        declare=[],
        retry_policy=None,
    )
    payload = json.dumps(body).encode()
    message = {
        "body": base64.b64encode(payload).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(message).encode()


def publish(app, name: str, args: tuple, *, retry_policy: dict) -> None:
    queue = app.conf.task_default_queue
    message = envelope(app, name, args, queue=queue)
    tries = retry_policy["max_retries"] + 1
    wait = retry_policy["interval_start"]
    for attempt in range(tries):
        try:
            get_redis().lpush(queue, message)
            return
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == tries - 1:
                raise
            time.sleep(wait)
            wait = min(wait + retry_policy["interval_step"], retry_policy["interval_max"])
