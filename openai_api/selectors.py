"""Reads for API keys: what each key has spent, in its limit's window and in all.

A key's spend is read from the holds placed under it (KeyHold: /v1 calls and chat replies
sent with the key), the ledger's own record: the posted amount (and any excess charged
above it) once settled, the whole hold while pending, nothing once voided or expired.
The spend limit (openai_api/key_spend.py) and the usage shown to the user read the same.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Case, Count, F, Q, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from openai_api.models import KeyHold
from panels.models import ApiKey
from wallet.models import Hold

# What a hold counts against its key.
SPENT = Case(
    When(hold__status=Hold.Status.PENDING, then=F("hold__amount")),
    When(hold__status=Hold.Status.POSTED, then=F("hold__posted_amount") + F("hold__excess")),
    default=Value(0),
)


@dataclass(frozen=True)
class KeyUsage:
    calls: int  # holds placed under the key: /v1 calls and chat replies
    spent_total: int  # credits charged, plus holds still pending
    spent_in_period: int  # the same, in the limit's current window (= total for a total limit)
    remaining: int | None  # credits the limit leaves; None without a limit


def key_spent(*, api_key: ApiKey, since: dt.datetime | None = None) -> int:
    """Credits the key spent since `since` (all time for None), holds still pending included."""
    holds = KeyHold.objects.filter(api_key=api_key)
    if since is not None:
        holds = holds.filter(created_at__gte=since)
    return int(holds.aggregate(spent=Coalesce(Sum(SPENT), 0))["spent"])


def key_usage(*, api_key: ApiKey, now: dt.datetime | None = None) -> KeyUsage:
    since = api_key.period_start(now or timezone.now())
    in_period = Q(created_at__gte=since) if since is not None else Q()
    totals = KeyHold.objects.filter(api_key=api_key).aggregate(
        calls=Count("id"),
        total=Coalesce(Sum(SPENT), 0),
        period=Coalesce(Sum(SPENT, filter=in_period), 0),
    )
    remaining = None if api_key.spend_limit is None else max(api_key.spend_limit - totals["period"], 0)
    return KeyUsage(
        calls=totals["calls"], spent_total=totals["total"], spent_in_period=totals["period"], remaining=remaining
    )
