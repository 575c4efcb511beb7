from __future__ import annotations

from django.db import connection


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"database unreachable: {exc.__class__.__name__}"
    return None


def check_redis() -> str | None:
    from panels.redis_client import get_redis

    try:
        get_redis().ping()
    except Exception as exc:
        return f"redis unreachable: {exc.__class__.__name__}"
    return None


def check_worker() -> str | None:
    from panels.heartbeat import workers_alive

    try:
        alive = workers_alive()
    except Exception:
        return "worker status unknown: redis unreachable"
    return None if alive else "no worker has reported in the last 20 seconds"


def health_report() -> tuple[bool, dict]:
    redis_problem = check_redis()
    checks = {
        "database": check_database(),
        "redis": redis_problem,
        # Asking a Redis that just failed again would only double the wait (connect timeout).
        "worker": check_worker() if redis_problem is None else "worker status unknown: redis unreachable",
    }
    ok = all(problem is None for problem in checks.values())
    body = {
        "status": "ok" if ok else "fail",
        "checks": {name: ("ok" if problem is None else problem) for name, problem in checks.items()},
        "failing": [name for name, problem in checks.items() if problem is not None],
    }
    return ok, body
