"""Reads for API keys: what each key has spent, in its limit's window and in all."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Case, Count, F, Q, Sum, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from openai_api.models import ApiCall
from panels.models import ApiKey


@dataclass(frozen=True)
class KeyUsage:
    calls: int
    spent_total: int  # credits charged, plus holds of calls still running
    spent_in_period: int  # the same, in the limit's current window (= total for a total limit)
    remaining: int | None  # credits the limit leaves; None without a limit


# What a call counts against its key: its cost, or while it runs, its hold.
SPENT = Case(When(status=ApiCall.Status.STREAMING, then=F("reserved")), default=Coalesce(F("cost"), 0))


def key_usage(*, api_key: ApiKey, now: dt.datetime | None = None) -> KeyUsage:
    since = api_key.period_start(now or timezone.now())
    calls = ApiCall.objects.filter(api_key=api_key).exclude(status=ApiCall.Status.REFUSED)
    in_period = Q(created_at__gte=since) if since is not None else Q()
    totals = calls.aggregate(
        calls=Count("id"),
        total=Coalesce(Sum(SPENT), 0),
        period=Coalesce(Sum(SPENT, filter=in_period), 0),
    )
    remaining = None if api_key.spend_limit is None else max(api_key.spend_limit - totals["period"], 0)
    return KeyUsage(
        calls=totals["calls"], spent_total=totals["total"], spent_in_period=totals["period"], remaining=remaining
    )
