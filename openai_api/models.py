"""One row per call to the OpenAI-compatible API: what it held, what it cost, how it ended.

The row is the call's billing record (usage by model, by day and by key are read from
it) and, with an Idempotency-Key, the first outcome a retry gets back. Prompt and reply
text are kept only when the operator sets API_STORE_CONTENT.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ApiCall(models.Model):
    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Client disconnected (paid for the part generated)"
        FAILED = "failed", "Failed (nothing charged)"
        REFUSED = "refused", "Refused before the model was called"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_calls")
    api_key = models.ForeignKey(
        "panels.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="api_calls"
    )
    model = models.ForeignKey("chat.ModelSpec", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    requested_model = models.CharField(max_length=60, blank=True)
    tier = models.CharField(max_length=10, blank=True, help_text="For Auto: the tier the router chose.")
    routed_by = models.CharField(max_length=300, blank=True)
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.STREAMING)
    hold = models.OneToOneField("wallet.Hold", null=True, blank=True, on_delete=models.PROTECT, related_name="api_call")
    reserved = models.BigIntegerField(default=0, help_text="Credits held for the worst case while the call runs.")
    input_estimate = models.PositiveIntegerField(default=0)
    prices = models.JSONField(
        default=dict, blank=True, help_text="The prices the call is held and charged at (ModelSpec.prices_snapshot)."
    )
    max_output_tokens = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_estimated = models.BooleanField(default=False)
    cost = models.BigIntegerField(null=True, blank=True, help_text="Credits charged")
    finish_reason = models.CharField(max_length=20, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(
        null=True, blank=True, help_text="The first outcome, kept for a retry with the same Idempotency-Key."
    )
    prompt = models.JSONField(null=True, blank=True, help_text="Only with API_STORE_CONTENT.")
    reply = models.TextField(blank=True, help_text="Only with API_STORE_CONTENT.")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="apicall_idempotency_key_unique",
            ),
            models.CheckConstraint(condition=Q(cost__isnull=True) | Q(cost__gte=0), name="apicall_cost_non_negative"),
        ]
        indexes = [
            models.Index(fields=["api_key", "created_at"]),
            models.Index(fields=["user", "created_at"]),
            models.Index(fields=["status", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"API call {self.pk} ({self.status})"

    @property
    def completion_id(self) -> str:
        return f"chatcmpl-panels-{self.pk}"


class KeyHold(models.Model):
    """A hold placed under an API key: a /v1 call's, or a chat reply's sent with the key.

    What a key has spent is what its holds took (openai_api/key_spend.py): the posted
    amount once settled, the whole hold while it is pending, nothing once voided. One
    table for both paths, so the key's spend limit and its usage read one source.
    """

    api_key = models.ForeignKey("panels.ApiKey", on_delete=models.CASCADE, related_name="holds")
    hold = models.OneToOneField("wallet.Hold", on_delete=models.PROTECT, related_name="key_hold")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["api_key", "created_at"])]

    def __str__(self) -> str:
        return f"hold {self.hold_id} under key {self.api_key_id}"
