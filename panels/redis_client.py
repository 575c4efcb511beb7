"""The one Redis client of a process (reply streams, heartbeats, rate limits, health).

One client per process and URL, built on first use and shared by the process's threads
(a redis-py client is thread-safe: each command borrows a connection from its pool).
Keyed by the process id, so a process forked after first use (a Celery prefork child, a
uvicorn worker) builds its own client and pool rather than writing to sockets it shares
with its parent; `os.register_at_fork` also empties the table and renews its lock in the
child, whose copy of a lock another thread held at the fork would never be released.
"""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings

_clients: dict[tuple[int, str], redis.Redis] = {}
_lock = threading.Lock()


def _client_for(url: str) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(
        url, socket_connect_timeout=1.0, socket_timeout=5.0, health_check_interval=15, max_connections=2000
    )
    return redis.Redis(connection_pool=pool, decode_responses=False)


def get_redis() -> redis.Redis:
    """This process's client for REDIS_URL."""
    key = (os.getpid(), settings.REDIS_URL)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(key)
        if client is None:
            # A parent's clients, if the fork hook did not run (a fork from C code): dropped,
            # not closed, as their sockets are the parent's.
            for stale in [k for k in _clients if k[0] != key[0]]:
                del _clients[stale]
            client = _clients[key] = _client_for(key[1])
    return client


def _after_fork_in_child() -> None:
    global _lock
    _clients.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
