"""Reads for the usage page: spend and tokens by model and by day, Auto's tier shares, and
what Auto saved against sending the same tokens to the flagship.

Counted: a user's replies that were billed (done or cancelled) in the last `days`
days, by the day they were sent (UTC), chat replies and calls to the OpenAI-compatible
API (/v1) alike. Replies in deleted conversations still count (chat/usage_records.py),
as the wallet's ledger keeps every charge.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, QuerySet
from django.utils import timezone

from chat.models import Message, ModelSpec
from chat.router import CHEAP, FLAGSHIP, category_label
from chat.routing import tier_model, tier_of
from chat.usage_records import deleted_reply_usage
from openai_api.models import ApiCall
from wallet.services import cost_in_credits, credits_to_usd

DEFAULT_DAYS = 30
BILLED = (Message.Status.DONE, Message.Status.CANCELLED)
TIER_LABELS = {CHEAP: "Cheap tier", FLAGSHIP: "Flagship", "demo": "Demo model", "other": "Other models"}
TIER_ORDER = (CHEAP, FLAGSHIP, "demo", "other")


@dataclass
class Tally:
    messages: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    credits: int = 0

    def add(self, *, input_tokens: int, output_tokens: int, credits: int) -> None:
        self.messages += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.credits += credits

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def usd(self) -> Decimal:
        return credits_to_usd(self.credits)


@dataclass
class ModelUsage:
    slug: str
    name: str
    tally: Tally = field(default_factory=Tally)


@dataclass
class DayUsage:
    date: dt.date
    tally: Tally = field(default_factory=Tally)
    credits_by_model: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TierShare:
    tier: str
    label: str
    messages: int
    percent: Decimal  # of Auto's messages, one decimal


@dataclass(frozen=True)
class AutoSavings:
    messages: int
    actual_credits: int  # what the Auto-routed replies cost
    flagship_credits: int  # the same tokens at the flagship's current prices
    flagship_name: str

    @property
    def saved_credits(self) -> int:
        return self.flagship_credits - self.actual_credits

    @property
    def saved_percent(self) -> Decimal:
        if not self.flagship_credits:
            return Decimal(0)
        return (Decimal(self.saved_credits) * 100 / self.flagship_credits).quantize(Decimal("0.1"))

    @property
    def actual_usd(self) -> Decimal:
        return credits_to_usd(self.actual_credits)

    @property
    def flagship_usd(self) -> Decimal:
        return credits_to_usd(self.flagship_credits)

    @property
    def saved_usd(self) -> Decimal:
        return credits_to_usd(self.saved_credits)


@dataclass(frozen=True)
class Escalation:
    category: str  # what Auto's router took the prompt for, e.g. "debugging"
    label: str
    messages: int


@dataclass(frozen=True)
class UsageReport:
    first_day: dt.date
    last_day: dt.date
    total: Tally
    models: list[ModelUsage]  # most spent first
    days: list[DayUsage]  # every day of the period, oldest first, empty ones included
    tier_shares: list[TierShare]  # of Auto's messages; empty when Auto was not used
    savings: AutoSavings | None  # None when Auto was not used or no flagship is in the catalog
    # "Ask the flagship" presses after an Auto reply, by the router's category, most first:
    # the cases where the user judged Auto's cheap answer not good enough.
    escalations: list[Escalation] = field(default_factory=list)

    @property
    def escalation_total(self) -> int:
        return sum(e.messages for e in self.escalations)

    @property
    def empty(self) -> bool:
        return self.total.messages == 0


def billed_replies(*, user: AbstractBaseUser, since: dt.datetime) -> QuerySet[Message]:
    return Message.objects.filter(
        conversation__user=user,
        role=Message.Role.ASSISTANT,
        status__in=BILLED,
        cost__isnull=False,
        created_at__gte=since,
    )


def billed_api_calls(*, user: AbstractBaseUser, since: dt.datetime) -> QuerySet[ApiCall]:
    return ApiCall.objects.filter(
        user=user,
        status__in=(ApiCall.Status.DONE, ApiCall.Status.CANCELLED),
        cost__isnull=False,
        created_at__gte=since,
    )


def usage_report(*, user: AbstractBaseUser, days: int = DEFAULT_DAYS, now: dt.datetime | None = None) -> UsageReport:
    now = now or timezone.now()
    last_day = timezone.localdate(now)
    first_day = last_day - dt.timedelta(days=days - 1)
    since = timezone.make_aware(dt.datetime.combine(first_day, dt.time.min))

    catalog = {m.pk: m for m in ModelSpec.objects.all()}
    flagship = tier_model(FLAGSHIP, [m for m in catalog.values() if m.enabled] or list(catalog.values()))

    total = Tally()
    by_model: dict[int | None, ModelUsage] = {}
    by_day = {first_day + dt.timedelta(days=n): DayUsage(date=first_day + dt.timedelta(days=n)) for n in range(days)}
    tiers: dict[str, int] = defaultdict(int)
    auto_actual = auto_flagship = auto_messages = 0

    fields = ("model_id", "requested_model", "input_tokens", "output_tokens", "cost", "created_at")
    rows = itertools.chain(
        billed_replies(user=user, since=since).values_list(*fields).iterator(chunk_size=2000),
        billed_api_calls(user=user, since=since).values_list(*fields).iterator(chunk_size=2000),
        deleted_reply_usage(user=user, since=since).values_list(*fields).iterator(chunk_size=2000),
    )
    for model_id, requested, input_tokens, output_tokens, cost, created_at in rows:
        input_tokens, output_tokens = input_tokens or 0, output_tokens or 0
        spec = catalog.get(model_id)
        total.add(input_tokens=input_tokens, output_tokens=output_tokens, credits=cost)
        usage = by_model.get(model_id)
        if usage is None:
            usage = by_model[model_id] = ModelUsage(
                slug=spec.slug if spec else "", name=spec.name if spec else "Removed model"
            )
        usage.tally.add(input_tokens=input_tokens, output_tokens=output_tokens, credits=cost)
        day = by_day.get(timezone.localdate(created_at))
        if day is not None:
            day.tally.add(input_tokens=input_tokens, output_tokens=output_tokens, credits=cost)
            day.credits_by_model[usage.slug] = day.credits_by_model.get(usage.slug, 0) + cost
        if requested == "auto":
            auto_messages += 1
            tiers[tier_of(spec) if spec else "other"] += 1
            auto_actual += cost
            if flagship is not None:
                auto_flagship += cost_in_credits(
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    input_price=flagship.input_price,
                    output_price=flagship.output_price,
                )

    shares = [
        TierShare(
            tier=tier,
            label=TIER_LABELS.get(tier, tier),
            messages=tiers[tier],
            percent=(Decimal(tiers[tier]) * 100 / auto_messages).quantize(Decimal("0.1")),
        )
        for tier in TIER_ORDER
        if tiers.get(tier)
    ]
    savings = None
    if auto_messages and flagship is not None:
        savings = AutoSavings(
            messages=auto_messages,
            actual_credits=auto_actual,
            flagship_credits=auto_flagship,
            flagship_name=flagship.name,
        )
    return UsageReport(
        first_day=first_day,
        last_day=last_day,
        total=total,
        models=sorted(by_model.values(), key=lambda u: (-u.tally.credits, u.name)),
        days=list(by_day.values()),
        tier_shares=shares,
        savings=savings,
        escalations=escalations_by_category(user=user, since=since),
    )


def escalations_by_category(*, user: AbstractBaseUser, since: dt.datetime) -> list[Escalation]:
    """Each "Ask the flagship" once (its retries are not counted again), by the router's category."""
    rows = (
        Message.objects.filter(
            conversation__user=user, role=Message.Role.ASSISTANT, escalation_of__isnull=False, created_at__gte=since
        )
        .values("route_category")
        .annotate(n=Count("id"))
    )
    found = [Escalation(r["route_category"], category_label(r["route_category"] or "other"), r["n"]) for r in rows]
    return sorted(found, key=lambda e: (-e.messages, e.label))
