from __future__ import annotations

import logging

from celery import shared_task

from wallet.services import holds_expire as _holds_expire
from wallet.stripe_client import StripeUnavailable

log = logging.getLogger(__name__)


@shared_task(name="wallet.tasks.topup_receipt_email", ignore_result=True, acks_late=True)
def topup_receipt_email(topup_id: int) -> bool:
    from wallet.alerts import topup_receipt_send

    return topup_receipt_send(topup_id=topup_id)


@shared_task(name="wallet.tasks.holds_expire", ignore_result=True)
def holds_expire() -> int:
    count = _holds_expire()
    if count:
        log.info("expired holds", extra={"count": count})
    return count


@shared_task(name="wallet.tasks.autotopup_run", ignore_result=True, acks_late=True)
def autotopup_run(account_id: int) -> str:
    """Charge the wallet's saved card if it is below its threshold. Safe to run twice:
    the attempt is recorded before Stripe is called and charged with a key derived from it."""
    from wallet.autotopups import autotopup_run as run

    return run(account_id=account_id)


@shared_task(name="wallet.tasks.topup_reconcile", ignore_result=True, acks_late=True)
def topup_reconcile(topup_id: int) -> str:
    """Ask Stripe how a top-up whose webhook never came ended, and apply it; idempotent."""
    from wallet.reconcile import topup_reconcile as reconcile

    return reconcile(topup_id=topup_id)


# A closed account's Stripe Customer, retried while Stripe is unreachable: after 1 minute, then
# doubling (with jitter) up to 6 hours between tries, 16 tries in all (about 2 days).
CUSTOMER_DELETE_FIRST_RETRY = 60


@shared_task(
    name="wallet.tasks.stripe_customer_delete",
    ignore_result=True,
    acks_late=True,
    autoretry_for=(StripeUnavailable,),
    retry_backoff=CUSTOMER_DELETE_FIRST_RETRY,
    retry_backoff_max=6 * 3600,
    retry_jitter=True,
    max_retries=16,
)
def stripe_customer_delete(customer_id: str) -> bool:
    """Delete a closed account's Stripe Customer. Idempotent: one already deleted counts as done."""
    from wallet.stripe_client import customer_delete, stripe_enabled

    if not stripe_enabled():
        return False
    return customer_delete(customer_id=customer_id)
