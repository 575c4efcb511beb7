from __future__ import annotations

import logging

from celery import shared_task

from wallet.services import holds_expire as _holds_expire

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
