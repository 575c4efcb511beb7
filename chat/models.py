from __future__ import annotations

import os
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ModelSpec(models.Model):
    """One model of the catalog: where it is served, what it costs, what it can take."""

    class Tier(models.TextChoices):
        CHEAP = "cheap", "Cheap"
        FLAGSHIP = "flagship", "Flagship"
        OTHER = "other", "Other"

    class Api(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        ANTHROPIC = "anthropic", "Anthropic Messages"
        GEMINI = "gemini", "Gemini (OpenAI compatibility)"
        MISTRAL = "mistral", "Mistral"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server (Ollama, vLLM, llama.cpp, LM Studio)"

    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=40)
    api = models.CharField(
        max_length=20,
        choices=Api.choices,
        default=Api.OPENAI_COMPATIBLE,
        help_text="Which adapter calls it: what the API accepts and how it reports usage (docs/providers.md).",
    )
    upstream_id = models.CharField(max_length=120)
    base_url = models.URLField(max_length=300)
    api_key_env = models.CharField(
        max_length=80, blank=True, help_text="Environment variable holding the key; empty for the demo server."
    )
    input_price = models.DecimalField(max_digits=10, decimal_places=4, help_text="USD per 1M input tokens")
    output_price = models.DecimalField(max_digits=10, decimal_places=4, help_text="USD per 1M output tokens")
    price_tiers = models.JSONField(
        default=list,
        blank=True,
        help_text='Higher rates for long prompts: [{"above": 200000, "input": "6", "output": "22.5"}] (USD per 1M '
        "tokens; a prompt of more than `above` input tokens pays that tier's rates on all its tokens).",
    )
    prices_source = models.CharField(
        max_length=120, blank=True, help_text="Where the prices came from: genai-prices (version, model) or manual."
    )
    context_window = models.PositiveIntegerField()
    max_output_tokens = models.PositiveIntegerField()
    image_input = models.BooleanField(default=False)
    tier = models.CharField(max_length=10, choices=Tier.choices, default=Tier.OTHER)
    is_demo = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    sort_order = models.PositiveSmallIntegerField(default=100)
    check_problem = models.CharField(
        max_length=300,
        blank=True,
        help_text="Why `models check` found it unusable (not listed by the provider, key refused); "
        'empty when the last check passed. Operators only: users see "temporarily unavailable".',
    )
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["sort_order", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(input_price__gte=0, output_price__gte=0), name="model_prices_non_negative"
            ),
            models.CheckConstraint(condition=Q(max_output_tokens__gt=0), name="model_max_output_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str:
        if self.is_demo:
            return "demo"
        if not self.api_key_env:
            # A self-hosted server may need no key; the SDK still sends one.
            return "no-key" if self.api == self.Api.OPENAI_COMPATIBLE else ""
        return os.environ.get(self.api_key_env, "")

    @property
    def available(self) -> bool:
        if self.is_demo and not settings.DEMO_ALLOWED:
            return False
        return self.enabled and bool(self.api_key) and not self.check_problem

    @property
    def operator_reason(self) -> str:
        """Why the model can't be used, for operators (admin, logs): may name a variable."""
        if self.is_demo and not settings.DEMO_ALLOWED:
            return "the demo model never answers in production"
        if not self.enabled:
            return "disabled by the operator"
        if not self.api_key:
            return f"{self.api_key_env or 'its key variable'} is not set"
        return self.check_problem

    @property
    def unavailable_reason(self) -> str:
        """What a user is told: never a variable name or a provider's words."""
        return "" if self.available else "temporarily unavailable"

    @property
    def price_label(self) -> str:
        label = f"${self.input_price.normalize():f} in / ${self.output_price.normalize():f} out per 1M tokens"
        if self.price_tiers:
            label += " (more above " + ", ".join(f"{int(t['above']):,}" for t in self.price_tiers) + " input tokens)"
        return label

    def price_per_million(self) -> tuple[Decimal, Decimal]:
        return self.input_price, self.output_price

    def prices_snapshot(self) -> dict:
        """The exact prices a reply is held and charged at, stored with it."""
        return {
            "input": str(self.input_price),
            "output": str(self.output_price),
            "tiers": [
                {"above": int(t["above"]), "input": str(t["input"]), "output": str(t["output"])}
                for t in self.price_tiers or []
            ],
        }


class Conversation(models.Model):
    """One chat thread of one user."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    system_prompt = models.TextField(blank=True, help_text="Sent first, as the system message, with every reply.")
    temperature = models.DecimalField(
        max_digits=3, decimal_places=2, null=True, blank=True, help_text="0 to 2; empty for the model's default."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["user", "-updated_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(temperature__isnull=True) | Q(temperature__gte=0, temperature__lte=2),
                name="conversation_temperature_range",
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    """A user's message or a model's reply; a reply carries its hold, usage and cost."""

    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        STREAMING = "streaming", "Streaming"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    attachments = models.JSONField(default=list, blank=True, help_text="Images sent with a user message.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DONE)
    model = models.ForeignKey(ModelSpec, null=True, blank=True, on_delete=models.PROTECT, related_name="messages")
    requested_model = models.CharField(max_length=60, blank=True, help_text='What the user picked: a slug or "auto".')
    routed_by = models.CharField(max_length=300, blank=True)
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    escalation_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="escalations",
        help_text='The Auto reply this one re-answers on the flagship ("Ask the flagship").',
    )
    route_category = models.CharField(
        max_length=40, blank=True, help_text="For an escalation: the kind of task Auto's router saw in the prompt."
    )
    hold = models.OneToOneField("wallet.Hold", null=True, blank=True, on_delete=models.PROTECT, related_name="message")
    context_ids = models.JSONField(default=list, blank=True, help_text="Earlier messages sent to the model, in order.")
    input_estimate = models.PositiveIntegerField(default=0)
    prices = models.JSONField(
        default=dict, blank=True, help_text="The model's prices when the reply was held; it is charged at these."
    )
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_estimated = models.BooleanField(default=False)
    cost = models.BigIntegerField(null=True, blank=True, help_text="Credits charged")
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    cancel_requested = models.BooleanField(default=False)
    superseded_at = models.DateTimeField(
        null=True, blank=True, help_text="Replaced by an edit or a regenerated reply: hidden, and not sent to models."
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversation", "id"]),
            models.Index(fields=["status", "created_at"]),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cost__isnull=True) | Q(cost__gte=0), name="message_cost_non_negative"),
            models.CheckConstraint(condition=Q(role__in=["user", "assistant"]), name="message_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED, self.Status.CANCELLED)


class SendKey(models.Model):
    """A client's Idempotency-Key on a send or a retry, with the first outcome it got.

    A repeat of the key answers that outcome again (the same reply, or the same refusal
    for lack of credits); the key with another request is a conflict. Unique per user,
    in the database, so two web processes racing on one key store one reply.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of what the request asked for.")
    status_code = models.PositiveSmallIntegerField(help_text="202 accepted, 402 refused, 503 not queued.")
    reply = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    error = models.JSONField(null=True, blank=True, help_text="What a refused first attempt was told.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="send_key_unique_per_user")]

    def __str__(self) -> str:
        return f"send key {self.key!r} ({self.status_code})"


class DeletedReplyUsage(models.Model):
    """What a billed reply used and cost, kept when its conversation is deleted.

    The wallet's ledger keeps every charge whatever is deleted; this keeps the usage page
    (tokens and spend by model and day) agreeing with it. Written in the transaction that
    deletes the conversation, so each reply is counted once: live, or here.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    model = models.ForeignKey(ModelSpec, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    requested_model = models.CharField(max_length=60, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost = models.BigIntegerField()
    created_at = models.DateTimeField(help_text="When the reply was sent.")
    message_id = models.BigIntegerField(unique=True, help_text="The deleted reply's id.")

    class Meta:
        indexes = [models.Index(fields=["user", "created_at"])]
        constraints = [models.CheckConstraint(condition=Q(cost__gte=0), name="deleted_reply_cost_non_negative")]

    def __str__(self) -> str:
        return f"usage of deleted reply {self.message_id}"
