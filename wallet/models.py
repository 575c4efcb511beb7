"""The ledger: accounts, immutable double-entry entries, holds, and top-ups."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from wallet import digests


class LedgerImmutable(Exception):
    """Raised on any attempt to change or delete a ledger entry: corrections are new entries."""


class Account(models.Model):
    """A user's wallet, or a system account money comes from or goes to.

    Only user wallets keep a stored balance: system accounts are touched by every
    movement, so locking and updating them would serialise every wallet behind one
    row. Their balances are computed from the entries when needed.
    """

    class Kind(models.TextChoices):
        USER = "user", "User wallet"
        SYSTEM = "system", "System account"

    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.USER)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="wallet"
    )
    code = models.CharField(max_length=40, unique=True, null=True, blank=True)
    balance = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    frozen_reason = models.CharField(max_length=200, blank=True)
    # Digest of the wallet's newest entry: each entry chains the one before it.
    chain_head = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(held__gte=0), name="account_held_non_negative"),
            models.CheckConstraint(
                condition=Q(kind="system") | Q(balance__gte=F("held")), name="account_available_non_negative"
            ),
            models.CheckConstraint(
                condition=(Q(kind="user", user__isnull=False, code__isnull=True))
                | Q(kind="system", user__isnull=True, code__isnull=False),
                name="account_owner_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"wallet of {self.user}" if self.kind == self.Kind.USER else f"system:{self.code}"

    @property
    def available(self) -> int:
        return self.balance - self.held

    @property
    def frozen(self) -> bool:
        return bool(self.frozen_reason)


class Entry(models.Model):
    """One immutable movement of credits from `debit_account` to `credit_account`.

    The database refuses UPDATE and DELETE (a trigger, migration 0004). `wallet` is the
    user wallet the entry moves; `digest` chains that wallet's previous entry.
    """

    class Kind(models.TextChoices):
        TOPUP = "topup", "Top-up"
        USAGE = "usage", "Usage"
        GRANT = "grant", "Grant"
        REFUND = "refund", "Refund"
        REVERSAL = "reversal", "Reversal"
        ADJUSTMENT = "adjustment", "Adjustment"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    # Each index and foreign key is one more write or look-up per entry on the hot path,
    # so only what a query or a rule needs (migration 0014): no index on the accounts (a
    # wallet's entries are its chain, read by the chain index; accounts are never
    # deleted), none on the reference (nothing looks entries up by it).
    debit_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="debits", db_index=False)
    credit_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="credits", db_index=False)
    amount = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=200, unique=True)
    reference = models.CharField(max_length=200, blank=True)
    memo = models.CharField(max_length=500, blank=True)
    hold = models.OneToOneField("Hold", null=True, blank=True, on_delete=models.PROTECT, related_name="entry")
    # No foreign key of its own: `entry_wallet_is_a_side` makes it the debit or the credit
    # account, whose keys are checked (a CHECK costs nothing; a foreign key, a look-up).
    wallet = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="chain", db_index=False, db_constraint=False
    )  # chain_idx
    created_at = models.DateTimeField()
    digest = models.CharField(max_length=64)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "entries"
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="entry_amount_positive"),
            models.CheckConstraint(condition=~Q(debit_account=F("credit_account")), name="entry_accounts_differ"),
            models.CheckConstraint(
                condition=Q(wallet=F("debit_account")) | Q(wallet=F("credit_account")), name="entry_wallet_is_a_side"
            ),
        ]
        # A wallet's entries in chain order: the audit's and the statement's.
        indexes = [models.Index(fields=["wallet", "id"], name="wallet_entry_chain_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.debit_account_id}->{self.credit_account_id}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise LedgerImmutable("Ledger entries are immutable; post a reversing entry instead.")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> None:
        raise LedgerImmutable("Ledger entries cannot be deleted; post a reversing entry instead.")

    def content_digest(self) -> str:
        return digests.content_digest(
            kind=self.kind,
            debit_account_id=self.debit_account_id,
            credit_account_id=self.credit_account_id,
            amount=self.amount,
            idempotency_key=self.idempotency_key,
            reference=self.reference,
            memo=self.memo,
            hold_id=self.hold_id,
            created_at=self.created_at,
        )

    def chained_digest(self, previous: str) -> str:
        return digests.chain(previous, self.content_digest())

    def signed_amount_for(self, account: Account) -> int:
        return self.amount if self.credit_account_id == account.pk else -self.amount


class Hold(models.Model):
    """Credits reserved before a model is called; resolved at most once."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        POSTED = "posted", "Posted"
        VOIDED = "voided", "Voided"
        EXPIRED = "expired", "Expired"
        REJECTED = "rejected", "Rejected (insufficient credits)"

    # No index on the account: nothing looks holds up by wallet (accounts are never
    # deleted), and it would be one more write per hold and per resolution.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="holds", db_index=False)
    amount = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    posted_amount = models.BigIntegerField(null=True, blank=True)
    # What a post asked above the hold: charged from the available balance, the rest
    # recorded as a Shortfall (entry and shortfall keyed `hold:<id>:excess`).
    excess = models.BigIntegerField(default=0)
    idempotency_key = models.CharField(max_length=200, unique=True)
    reference = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
            models.CheckConstraint(
                condition=Q(posted_amount__isnull=True) | Q(posted_amount__gte=0, posted_amount__lte=F("amount")),
                name="hold_posted_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(excess=0) | Q(excess__gt=0, posted_amount=F("amount")), name="hold_excess_after_full_post"
            ),
        ]
        indexes = [
            # The expiry sweep's and the audit's: pending holds only, so a resolved hold
            # leaves it (a posted or voided hold's new row version is not added to it) and
            # it stays as small as the holds in flight, whatever the history.
            models.Index(fields=["expires_at"], condition=Q(status="pending"), name="hold_pending_expiry_idx")
        ]

    def __str__(self) -> str:
        return f"hold {self.pk} {self.amount} ({self.status})"


class Shortfall(models.Model):
    """Credits a charge could not take: a clawback of credits already spent, or usage
    above what the wallet had. Its reference is the charge's idempotency key; an
    unresolved shortfall keeps the wallet frozen."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="shortfalls")
    amount = models.BigIntegerField()
    reference = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="shortfall_amount_positive"),
            models.UniqueConstraint(fields=["reference"], name="shortfall_reference_unique"),
        ]

    def __str__(self) -> str:
        return f"shortfall {self.amount} on {self.account} ({self.reference})"


class Takeback(models.Model):
    """Credits a refund or lost dispute still has to take back, waiting for replies to settle.

    A refund that arrives while replies hold credits can't take those credits yet, and
    they are not spent either: the part the holds cover is owed, and taken as each hold
    resolves (from what it releases). What is still owed once no hold is pending was
    spent, and becomes a Shortfall.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="takebacks")
    key = models.CharField(max_length=200, unique=True, help_text="The take-back's idempotency key.")
    reference = models.CharField(max_length=200)
    memo = models.CharField(max_length=300, blank=True)
    amount = models.BigIntegerField(help_text="Credits deferred when the refund arrived.")
    remaining = models.BigIntegerField(help_text="Credits still to take back.")
    parts = models.PositiveIntegerField(default=0, help_text="Entries taken so far.")
    shortfall = models.BigIntegerField(default=0, help_text="What was spent after all, recorded as a shortfall.")
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="takeback_amount_positive"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0, remaining__lte=F("amount")), name="takeback_remaining_within_amount"
            ),
        ]
        indexes = [models.Index(fields=["account", "resolved_at"])]

    def __str__(self) -> str:
        return f"take-back {self.key}: {self.remaining} of {self.amount} owed"


class Topup(models.Model):
    """A purchase of credits, through Stripe Checkout or the demo checkout."""

    class Status(models.TextChoices):
        CREATED = "created", "Awaiting payment"
        PENDING = "pending", "Payment processing"
        PAID = "paid", "Paid"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired (not paid)"
        CANCELLED = "cancelled", "Cancelled (not paid)"
        REFUNDED = "refunded", "Refunded"
        PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
        DISPUTED = "disputed", "Disputed"
        DISPUTE_LOST = "dispute_lost", "Dispute lost"

    class Provider(models.TextChoices):
        STRIPE = "stripe", "Stripe"
        DEMO = "demo", "Demo (no card charged)"

    class DisputeStatus(models.TextChoices):
        OPEN = "open", "Open"
        WON = "won", "Won"
        LOST = "lost", "Lost"

    class Kind(models.TextChoices):
        CHECKOUT = "checkout", "Checkout"
        AUTO = "auto", "Automatic (saved card)"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="topups")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="topups")
    provider = models.CharField(max_length=10, choices=Provider.choices)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CHECKOUT)
    amount_cents = models.PositiveIntegerField()
    credits = models.BigIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CREATED)
    checkout_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    checkout_url = models.URLField(max_length=2000, blank=True)
    payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    receipt_url = models.URLField(max_length=2000, blank=True)
    refunded_cents = models.PositiveIntegerField(default=0)
    # Credits accounted for by refunds and lost disputes: what was taken back plus any
    # shortfall. Never more than `credits`, so a refund and a dispute can't both take all.
    clawed_back_credits = models.BigIntegerField(default=0)
    dispute_id = models.CharField(max_length=255, blank=True)
    dispute_status = models.CharField(max_length=20, choices=DisputeStatus.choices, blank=True)
    # When an operator resolved the freeze a lost dispute left: it then holds no freeze.
    dispute_reviewed_at = models.DateTimeField(null=True, blank=True)
    credited_at = models.DateTimeField(null=True, blank=True)
    receipt_emailed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount_cents__gte=100), name="topup_minimum"),
            models.CheckConstraint(condition=Q(credits__gt=0), name="topup_credits_positive"),
            models.CheckConstraint(
                condition=Q(clawed_back_credits__gte=0, clawed_back_credits__lte=F("credits")),
                name="topup_clawback_within_credits",
            ),
            # Never two automatic top-ups in flight for one wallet, whatever the callers do.
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(kind="auto", status__in=["created", "pending"]),
                name="topup_one_auto_in_flight",
            ),
        ]
        indexes = [
            # The reconcile sweep's (wallet/reconcile.py), every minute on each worker: the few
            # Stripe top-ups in flight, not the paid ones (a 1M-row table: 0.2 ms, not 400).
            models.Index(
                fields=["updated_at"],
                condition=Q(provider="stripe", credited_at__isnull=True, status__in=["created", "pending"]),
                name="topup_reconcile_waiting_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"top-up {self.pk} ${self.amount_cents / 100:.2f} ({self.status})"

    @property
    def amount_usd(self) -> str:
        return f"{self.amount_cents / 100:.2f}"


class StripeEvent(models.Model):
    """Each Stripe event id is handled once; redeliveries find it here.

    An event about a payment whose top-up is not credited yet (events arrive in any
    order) is kept as `deferred` with its payload, and applied when the top-up is.
    """

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSING = "processing", "Processing"
        PROCESSED = "processed", "Processed"
        DEFERRED = "deferred", "Waiting for its top-up"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed (will be retried)"

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    livemode = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RECEIVED)
    event_created = models.BigIntegerField(null=True, blank=True)
    payload = models.JSONField(null=True, blank=True)
    topup = models.ForeignKey(Topup, null=True, blank=True, on_delete=models.PROTECT, related_name="stripe_events")
    payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=300, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "event_created"])]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type} ({self.status})"


class AuditCheckpoint(models.Model):
    """How far the audit has verified a wallet: its entries up to `entry_id`, the chain's
    digest there and the balance they add up to. The next audit verifies only newer
    entries, starting from these; `wallet audit --full` starts from nothing."""

    account = models.OneToOneField(Account, on_delete=models.PROTECT, primary_key=True, related_name="audit_checkpoint")
    entry_id = models.BigIntegerField()
    digest = models.CharField(max_length=64)
    balance = models.BigIntegerField()
    checked_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"audited {self.account_id} up to entry {self.entry_id}"


class BalanceAlert(models.Model):
    """A user's low-balance email: sent once when the available balance falls below the
    threshold, re-armed when it is back at or above it (wallet/alerts.py)."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, primary_key=True, related_name="balance_alert")
    threshold = models.BigIntegerField(help_text="Credits; the email goes out below this available balance.")
    armed = models.BooleanField(default=True, help_text="Off after an email, until the balance is back up.")
    last_sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(threshold__gt=0), name="balance_alert_threshold_positive")]

    def __str__(self) -> str:
        return f"low-balance alert below {self.threshold} for {self.account}"


class AutoTopup(models.Model):
    """A wallet's automatic top-up: below `threshold` available credits, charge the saved
    card `amount_cents` (wallet/autotopups.py). Each charge is a Topup of kind `auto`.

    A failed charge pauses it (`paused_at`, `paused_reason`) until the user resumes it or
    saves another card; the user is emailed once per pause (`notified_at`).
    """

    class Provider(models.TextChoices):
        STRIPE = "stripe", "Stripe"
        DEMO = "demo", "Demo card (no card charged)"

    account = models.OneToOneField(Account, on_delete=models.CASCADE, primary_key=True, related_name="autotopup")
    enabled = models.BooleanField(default=False)
    threshold = models.BigIntegerField(help_text="Credits; a top-up starts when the available balance falls below.")
    amount_cents = models.PositiveIntegerField(help_text="What each automatic top-up charges, in cents.")
    provider = models.CharField(max_length=10, choices=Provider.choices, blank=True)
    customer_id = models.CharField(max_length=255, blank=True, help_text="The Stripe Customer the card is saved on.")
    payment_method_id = models.CharField(max_length=255, blank=True)
    card_brand = models.CharField(max_length=30, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    demo_declines = models.BooleanField(default=False, help_text="The demo card that is always declined.")
    setup_session_id = models.CharField(max_length=255, blank=True, help_text="The latest card set-up checkout.")
    setup_started_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_reason = models.CharField(max_length=300, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True, help_text="When the user was emailed about the pause.")
    last_attempt = models.ForeignKey(Topup, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(threshold__gt=0), name="autotopup_threshold_positive"),
            models.CheckConstraint(condition=Q(amount_cents__gte=100), name="autotopup_amount_minimum"),
        ]
        indexes = [models.Index(fields=["paused_at", "notified_at"], name="autotopup_paused_idx")]

    def __str__(self) -> str:
        return f"auto top-up of {self.account} below {self.threshold}"

    @property
    def has_card(self) -> bool:
        return bool(self.payment_method_id)

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def amount_usd(self) -> str:
        return f"{self.amount_cents / 100:.2f}"
