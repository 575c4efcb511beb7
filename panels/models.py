from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(models.Model):
    """A bearer key for the HTTP API. Only its hash is stored; the key is shown once.

    A key given to a tool can carry a spend limit (credits per day, per month or in
    total, counted over its /v1 calls) and an expiry.
    """

    class LimitPeriod(models.TextChoices):
        DAY = "day", "per day"
        MONTH = "month", "per month"
        TOTAL = "total", "in total"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, unique=True)
    key_hash = models.CharField(max_length=64)
    spend_limit = models.BigIntegerField(
        null=True, blank=True, help_text="Credits this key may spend per limit period; empty for no limit."
    )
    limit_period = models.CharField(max_length=5, choices=LimitPeriod.choices, default=LimitPeriod.TOTAL)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(spend_limit__isnull=True) | Q(spend_limit__gte=0), name="apikey_spend_limit_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(
        cls,
        *,
        user: settings.AUTH_USER_MODEL,
        name: str = "",
        spend_limit: int | None = None,
        limit_period: str = LimitPeriod.TOTAL,
        expires_at: dt.datetime | None = None,
    ) -> tuple[ApiKey, str]:
        prefix = secrets.token_hex(4)
        key = f"pnl_{prefix}_{secrets.token_urlsafe(32)}"
        api_key = cls.objects.create(
            user=user,
            name=name,
            prefix=prefix,
            key_hash=_digest(key),
            spend_limit=spend_limit,
            limit_period=limit_period,
            expires_at=expires_at,
        )
        return api_key, key

    @classmethod
    def authenticate(cls, key: str) -> ApiKey | None:
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "pnl":
            return None
        api_key = cls.objects.select_related("user").filter(prefix=parts[1], revoked_at__isnull=True).first()
        if api_key is None or not secrets.compare_digest(api_key.key_hash, _digest(key)):
            return None
        if not api_key.user.is_active or api_key.expired:
            return None
        return api_key

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def period_start(self, now: dt.datetime | None = None) -> dt.datetime | None:
        """Where the spend limit's window begins (UTC day or month); None for a total limit."""
        now = now or timezone.now()
        if self.limit_period == self.LimitPeriod.DAY:
            return now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.limit_period == self.LimitPeriod.MONTH:
            return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return None

    @property
    def limit_label(self) -> str:
        if self.spend_limit is None:
            return "no limit"
        return f"{self.spend_limit:,} credits {self.get_limit_period_display()}"

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
