"""A worker's background duties: a heartbeat for /healthz, the hold-expiry sweep and the
periodic `models check` (chat/availability.py).

The sweep runs with every worker (it is idempotent), so no separate beat process
is needed for holds to expire.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from django.conf import settings

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "panels:worker:"
HEARTBEAT_EVERY = 5
HEARTBEAT_TTL = 20


def worker_key(hostname: str) -> str:
    return f"{HEARTBEAT_PREFIX}{hostname}"


def workers_alive() -> list[str]:
    from panels.redis_client import get_redis

    return [key.decode() for key in get_redis().scan_iter(match=f"{HEARTBEAT_PREFIX}*", count=100)]


def _loop(hostname: str, stop: threading.Event) -> None:
    from django.db import close_old_connections

    from chat.worker import messages_fail_stale
    from openai_api.services import calls_fail_stale, idempotent_replies_forget
    from panels.redis_client import get_redis
    from wallet.services import holds_expire

    last_sweep = 0.0
    while not stop.is_set():
        try:
            get_redis().set(worker_key(hostname), str(time.time()), ex=HEARTBEAT_TTL)
        except Exception:
            log.warning("heartbeat failed: Redis unreachable")
        if time.monotonic() - last_sweep >= settings.CELERY_BEAT_SCHEDULE_SECONDS:
            last_sweep = time.monotonic()
            try:
                expired = holds_expire()
                if expired:
                    log.info("expired holds", extra={"count": expired})
                messages_fail_stale()  # replies a dead worker left streaming past their hold
                calls_fail_stale()  # /v1 calls a dead web process left running past their hold
                idempotent_replies_forget()
            except Exception:
                log.exception("hold sweep failed")
            finally:
                close_old_connections()
            try:
                from chat.availability import models_check_if_due

                # Once per MODELS_CHECK_SECONDS across all workers (a Redis lock); logged.
                models_check_if_due(every_seconds=settings.MODELS_CHECK_SECONDS)
            except Exception:
                log.exception("models check failed")
            finally:
                close_old_connections()
            try:
                from wallet.autotopups import autotopups_sweep

                autotopups_sweep()  # pause emails, lost charge tasks, lost triggers
            except Exception:
                log.exception("automatic top-up sweep failed")
            finally:
                close_old_connections()
            try:
                from wallet.reconcile import topups_reconcile_due

                topups_reconcile_due()  # Stripe top-ups whose webhook was lost: a task asks Stripe
            except Exception:
                log.exception("top-up reconcile sweep failed")
            finally:
                close_old_connections()
            try:
                from wallet.alerts import wallet_emails_sweep

                wallet_emails_sweep()  # low-balance alerts, and receipts whose task was lost
            except Exception:
                log.exception("wallet emails sweep failed")
            finally:
                close_old_connections()
        stop.wait(HEARTBEAT_EVERY)


def start(hostname: str | None = None) -> threading.Event:
    stop = threading.Event()
    name = hostname or socket.gethostname()
    threading.Thread(target=_loop, args=(name, stop), name="panels-heartbeat", daemon=True).start()
    return stop
