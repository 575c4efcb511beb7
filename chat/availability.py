"""`models check`: ask each configured provider, with its key, which models it lists, and
mark catalog models it no longer lists (retired, renamed) or refuses (a revoked key) as
unavailable, with the reason for operators. A provider that can't be reached leaves its
models as they were: a network blip must not empty the dropdown.

Runs by hand (`manage.py models check`) and from each worker's heartbeat every
MODELS_CHECK_SECONDS, once per period across all workers (a Redis lock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.utils import timezone

from chat import providers
from chat.models import ModelSpec

log = logging.getLogger(__name__)
LOCK_KEY = "panels:models-check"


@dataclass(frozen=True)
class CheckResult:
    slug: str
    ok: bool | None  # None: not checked (no key, or the provider could not be reached)
    problem: str


def models_check() -> list[CheckResult]:
    results: list[CheckResult] = []
    listed: dict[tuple[str, str, str], set[str] | providers.ProviderError] = {}
    for spec in ModelSpec.objects.filter(enabled=True, is_demo=False).order_by("sort_order", "slug"):
        if not spec.api_key:
            results.append(CheckResult(spec.slug, None, f"not checked: {spec.operator_reason}"))
            continue
        where = (spec.api, providers.base_url(spec), spec.api_key)
        if where not in listed:
            try:
                listed[where] = providers.model_ids(spec)
            except providers.ProviderError as err:
                listed[where] = err
        answer = listed[where]
        problem = ""
        if isinstance(answer, providers.ProviderError):
            if answer.transient:
                log.warning("models check: provider unreachable", extra={"model": spec.slug, "code": answer.code})
                results.append(CheckResult(spec.slug, None, f"not checked: {answer.message}"))
                continue
            problem = f"{spec.provider} refused the model list ({answer.code}, HTTP {answer.status})"
        elif spec.upstream_id not in answer:
            problem = f"{spec.provider} no longer lists {spec.upstream_id} for this key (retired or not enabled)"
        ModelSpec.objects.filter(pk=spec.pk).update(check_problem=problem[:300], checked_at=timezone.now())
        if problem:
            log.warning("model unavailable", extra={"model": spec.slug, "reason": problem})
        elif spec.check_problem:
            log.info("model available again", extra={"model": spec.slug})
        results.append(CheckResult(spec.slug, not problem, problem))
    return results


def models_check_if_due(*, every_seconds: int) -> bool:
    """From a worker's heartbeat: run the check unless another worker ran it this period."""
    if every_seconds <= 0:
        return False
    from panels.redis_client import get_redis

    if not get_redis().set(LOCK_KEY, timezone.now().isoformat(), nx=True, ex=every_seconds):
        return False
    results = models_check()
    log.info(
        "models checked",
        extra={"ok": sum(r.ok is True for r in results), "unavailable": sum(r.ok is False for r in results)},
    )
    return True
