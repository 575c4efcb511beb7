from __future__ import annotations

from django.conf import settings


class WalletError(Exception):
    code = "wallet_error"


class InsufficientCredits(WalletError):
    code = "insufficient_credits"

    def __init__(self, *, needed: int, available: int) -> None:
        super().__init__(f"This needs {needed:,} credits but only {available:,} are available.")
        self.needed = needed
        self.available = available


class WalletFrozen(WalletError):
    code = "wallet_frozen"

    def __init__(self, reason: str) -> None:
        super().__init__(f"This wallet is frozen: {reason}. Contact {settings.SUPPORT_EMAIL} to resolve it.")
        self.reason = reason


class IdempotencyConflict(WalletError):
    code = "idempotency_conflict"


class HoldNotPending(WalletError):
    code = "hold_not_pending"
