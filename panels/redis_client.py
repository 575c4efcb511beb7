"""The one Redis connection pool of a process (reply streams, heartbeats, health)."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def _pool(url: str) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(
        url, socket_connect_timeout=1.0, socket_timeout=5.0, health_check_interval=15, max_connections=2000
    )


def get_redis() -> redis.Redis:
    return redis.Redis(connection_pool=_pool(settings.REDIS_URL), decode_responses=False)
