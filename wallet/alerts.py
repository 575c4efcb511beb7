"""Emails about a wallet: the low-balance alert (once per crossing) and a receipt for
each top-up. Sent outside any transaction; each is claimed with a compare-and-swap
first, so two workers never send the same one twice."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from wallet.models import Account, BalanceAlert, Topup

log = logging.getLogger(__name__)


def _send(*, to: str, template: str, context: dict) -> None:
    context = {
        "site_name": settings.SITE_NAME,
        "site_url": settings.SITE_URL,
        "support_email": settings.SUPPORT_EMAIL,
        **context,
    }
    subject = " ".join(render_to_string(f"wallet/email/{template}_subject.txt", context).split())
    body = render_to_string(f"wallet/email/{template}_message.txt", context)
    send_mail(f"[{settings.SITE_NAME}] {subject}", body, settings.DEFAULT_FROM_EMAIL, [to])


def send_wallet_email(*, to: str, template: str, context: dict) -> None:
    """Email about a wallet from `wallet/email/<template>_subject.txt` and `_message.txt`."""
    _send(to=to, template=template, context=context)


def balance_alert_set(*, account: Account, threshold: int | None) -> BalanceAlert | None:
    """Turn the alert on at `threshold` credits (armed afresh), or off with None."""
    if not threshold:
        BalanceAlert.objects.filter(account=account).delete()
        return None
    alert, _ = BalanceAlert.objects.update_or_create(account=account, defaults={"threshold": threshold, "armed": True})
    return alert


def balance_alerts_send() -> int:
    """Email every armed alert whose wallet's available balance is below its threshold,
    and re-arm those whose balance is back. Returns the number of emails sent.

    Run by every worker's sweep (panels/heartbeat.py) and by `manage.py wallet alerts`.
    """
    available = F("account__balance") - F("account__held")
    BalanceAlert.objects.filter(armed=False).annotate(available=available).filter(available__gte=F("threshold")).update(
        armed=True
    )
    sent = 0
    due = BalanceAlert.objects.filter(armed=True).annotate(available=available).filter(available__lt=F("threshold"))
    for alert in due.select_related("account__user"):
        # Claim it: only one sweep sends this crossing's email.
        if not BalanceAlert.objects.filter(pk=alert.pk, armed=True).update(armed=False, last_sent_at=timezone.now()):
            continue
        user = alert.account.user
        try:
            _send(
                to=user.email,
                template="low_balance",
                context={
                    "available": alert.account.balance - alert.account.held,
                    "threshold": alert.threshold,
                    "topup_url": settings.SITE_URL + reverse("topup"),
                    "wallet_url": settings.SITE_URL + reverse("wallet"),
                },
            )
        except Exception:
            # Not sent: arm it again so the next sweep tries once more.
            BalanceAlert.objects.filter(pk=alert.pk).update(armed=True)
            log.exception("low-balance email failed", extra={"account_id": alert.pk})
            continue
        sent += 1
    return sent


def topup_receipt_queue(*, topup_id: int) -> None:
    """Send the receipt from a worker once the crediting transaction has committed.
    Best effort: a receipt whose task was lost goes out with the next sweep."""
    from wallet.tasks import topup_receipt_email

    try:
        topup_receipt_email.delay(topup_id)
    except Exception:
        log.warning("could not queue the top-up receipt", extra={"topup_id": topup_id})


def wallet_emails_sweep() -> dict[str, int]:
    """The periodic duty: low-balance alerts, and receipts of the last day not yet sent."""
    since = timezone.now() - dt.timedelta(days=1)
    receipts = 0
    for topup_id in Topup.objects.filter(credited_at__gte=since, receipt_emailed_at__isnull=True).values_list(
        "pk", flat=True
    ):
        try:
            receipts += topup_receipt_send(topup_id=topup_id)
        except Exception:
            continue  # logged; tried again next sweep
    return {"alerts": balance_alerts_send(), "receipts": receipts}


def topup_receipt_send(*, topup_id: int) -> bool:
    """Email the receipt of a credited top-up, once."""
    claimed = Topup.objects.filter(pk=topup_id, credited_at__isnull=False, receipt_emailed_at__isnull=True).update(
        receipt_emailed_at=timezone.now()
    )
    if not claimed:
        return False
    topup = Topup.objects.select_related("user", "account").get(pk=topup_id)
    try:
        _send(
            to=topup.user.email,
            template="topup_receipt",
            context={"topup": topup, "wallet_url": settings.SITE_URL + reverse("wallet")},
        )
    except Exception:
        Topup.objects.filter(pk=topup_id).update(receipt_emailed_at=None)
        log.exception("top-up receipt email failed", extra={"topup_id": topup_id})
        raise
    return True
