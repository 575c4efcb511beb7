"""Rate limits that hold under parallel requests: one atomic Redis script per check.

DRF's own throttles keep a list of timestamps in the cache and write it back after a read:
two requests at the same moment both read N-1 and both pass (592 of 600 parallel sends got
through a limit of 60/min). Here a Lua script keeps a sliding log per user and scope in a
sorted set and decides in one step inside Redis, on Redis's clock: at most `limit` requests
pass in any window of the scope's duration, whatever the number of web processes.

Redis down: the limit fails open (the request goes through) and each such request is logged
as a warning. What the limits guard (spend, Stripe sessions) has its own bounds that do not
need Redis: a send needs a hold on credits the user has, and replies in flight per user are
capped in the database (MAX_REPLIES_IN_FLIGHT_PER_USER). Failing closed would turn a Redis
outage into an outage of top-ups too, which need only PostgreSQL and Stripe.
"""

from __future__ import annotations

import functools
import logging
import uuid

import redis
from django.conf import settings
from redis.commands.core import Script
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle, UserRateThrottle

from panels.redis_client import get_redis

log = logging.getLogger(__name__)

# KEYS[1]: the log of one user's requests in one scope. ARGV: window (ms), limit, a unique
# member. Returns {1, 0} when the request may pass (and records it), else {0, ms to wait}.
_SLIDING_LOG = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now_ms}
"""


@functools.cache
def _script() -> Script:
    # EVALSHA, falling back to EVAL once per Redis that has not seen the script.
    return get_redis().register_script(_SLIDING_LOG)


def rate_check(*, key: str, limit: int, window_seconds: int) -> tuple[bool, float]:
    """(allowed, seconds to wait) for one more request under `key`; allowed if Redis is down."""
    try:
        allowed, wait_ms = _script()(
            keys=[f"{settings.RATE_LIMIT_PREFIX}:{key}"],
            args=[window_seconds * 1000, limit, uuid.uuid4().hex],
            client=get_redis(),
        )
    except redis.RedisError as exc:
        log.warning("rate limit not applied: Redis is unavailable", extra={"key": key, "error": str(exc)})
        return True, 0.0
    return bool(allowed), max(int(wait_ms), 0) / 1000


class _RedisLog(SimpleRateThrottle):
    """SimpleRateThrottle's rates, scopes and keys; the decision is `rate_check`'s."""

    _wait = 0.0

    def allow_request(self, request: Request, view: object) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        allowed, self._wait = rate_check(key=key, limit=self.num_requests, window_seconds=self.duration)
        return allowed

    def wait(self) -> float:
        return self._wait


class ScopedRateLimit(ScopedRateThrottle, _RedisLog):
    """Per user (or IP) and per the view's `throttle_scope`, e.g. "send", "route"."""


class UserRateLimit(UserRateThrottle, _RedisLog):
    """Per user, for the class's own `scope` (e.g. "topup")."""
