"""Automatic top-ups: below a threshold, charge the wallet's saved card a chosen amount.

The card is saved through a Checkout Session in setup mode (or, with no Stripe keys
outside production, as a demo card). Each charge is a Topup of kind `auto`, so refunds,
disputes, receipts and the wallet's history treat it as any other top-up, and it is
credited by the one fulfilment path (`topup_fulfil`, keyed `topup:auto_<id>`), once,
whether the API's answer or the `payment_intent.succeeded` webhook comes first.

Order of work, and why:
- a spend that leaves the available balance below the threshold queues a task after
  its transaction commits (`autotopup_after_spend`); the worker sweep is the backstop;
- the task records the attempt (the Topup row) in a transaction that locks the setting
  row, then charges Stripe with no transaction open, with an idempotency key derived
  from that row, so a retried task sends the same key and can't charge twice;
- at most one attempt is in flight per wallet (a partial unique index), and at most
  AUTOTOPUP_MAX_PER_DAY in 24 hours;
- a failure marks the attempt failed, pauses the feature with the reason, and emails
  the user once; resuming or saving another card lifts the pause.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from urllib.parse import urljoin

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from panels.money import usd_text
from wallet import stripe_client
from wallet.models import Account, AutoTopup, Topup
from wallet.services import credits_for_cents, wallet_for_user
from wallet.topups import (
    FulfilResult,
    TopupsUnavailable,
    TopupWalletFrozen,
    demo_checkout_enabled,
    topup_fetch_receipt,
    topup_fulfil,
    topups_unavailable_reason,
)

log = logging.getLogger(__name__)

AUTO_SESSION_PREFIX = "auto_"
IN_FLIGHT = (Topup.Status.CREATED, Topup.Status.PENDING)
# An attempt with no answer after this long is charged again with the same key by the sweep
# (its task was lost): Stripe returns the first outcome, so nothing is charged twice.
STALE_ATTEMPT = dt.timedelta(minutes=2)
DEFAULT_THRESHOLD_CREDITS = 2 * 2_000_000  # $2 at the default rate; replaced by the user's choice
DEFAULT_AMOUNT_CENTS = 1_000


class AutoTopupUnavailable(TopupsUnavailable):
    """This automatic top-up can't be set up or changed now; the message says why."""


class AutoTopupNoCard(AutoTopupUnavailable):
    """Turning automatic top-ups on needs a saved card first."""


def _key_stamp(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def charge_idempotency_key(topup: Topup) -> str:
    """One key per attempt: any retry of its charge sends it (ids repeat across databases, times don't)."""
    return f"panels-autotopup-{topup.pk}-{_key_stamp(topup.created_at)}-charge"


def autotopup_for_user(*, user: AbstractBaseUser) -> AutoTopup | None:
    return AutoTopup.objects.filter(account__user=user).select_related("last_attempt").first()


def _provider() -> str:
    """Where cards are saved on this server: Stripe, the demo (no keys, outside production), or nowhere."""
    if reason := topups_unavailable_reason():
        raise AutoTopupUnavailable(reason)
    if stripe_client.stripe_enabled():
        return AutoTopup.Provider.STRIPE
    if demo_checkout_enabled():
        return AutoTopup.Provider.DEMO
    raise AutoTopupUnavailable("Automatic top-ups are not available: this server has no payment provider configured.")


def autotopup_provider() -> tuple[str, str]:
    """(provider, "") where cards can be saved, or ("", why not) for the page."""
    try:
        return _provider(), ""
    except AutoTopupUnavailable as exc:
        return "", str(exc)


def _setting_for(account: Account) -> AutoTopup:
    setting, _ = AutoTopup.objects.get_or_create(
        account=account, defaults={"threshold": DEFAULT_THRESHOLD_CREDITS, "amount_cents": DEFAULT_AMOUNT_CENTS}
    )
    return setting


def _open_account(user: AbstractBaseUser) -> Account:
    account = wallet_for_user(user=user)
    if account.frozen:
        raise TopupWalletFrozen(
            f"Your wallet is frozen ({account.frozen_reason}), so automatic top-ups can't be changed until this is "
            "resolved. Nothing was charged."
        )
    return account


def autotopup_settings_save(*, user: AbstractBaseUser, enabled: bool, threshold: int, amount_cents: int) -> AutoTopup:
    """Set the threshold (credits) and amount (cents, within the top-up limits), on or off.

    Turning it on needs a saved card. If the balance is already below the threshold, the
    first top-up is queued once this commits.
    """
    if threshold <= 0:
        raise ValueError("The threshold must be above zero.")
    if not settings.TOPUP_MIN_CENTS <= amount_cents <= settings.TOPUP_MAX_CENTS:
        raise ValueError("The amount is outside the allowed range.")
    account = _open_account(user)
    with transaction.atomic():
        setting = _setting_for(account)
        setting = AutoTopup.objects.select_for_update().get(pk=setting.pk)
        if enabled and not setting.has_card:
            raise AutoTopupNoCard("Add a card first: automatic top-ups charge a saved card.")
        setting.enabled = enabled
        setting.threshold = threshold
        setting.amount_cents = amount_cents
        setting.save(update_fields=["enabled", "threshold", "amount_cents", "updated_at"])
        if enabled:
            transaction.on_commit(lambda: autotopup_after_spend(account_id=account.pk), robust=True)
    return setting


# -- the saved card ----------------------------------------------------------------------


def autotopup_card_setup_start(*, user: AbstractBaseUser, base_url: str) -> str:
    """Open a setup-mode Checkout Session for the user's card; returns its URL.

    The Stripe Customer is created once per wallet (its key derives from the wallet), and
    each set-up gets a key derived from when it was started, recorded first. Call with no
    transaction open.
    """
    if _provider() != AutoTopup.Provider.STRIPE:
        raise AutoTopupUnavailable("There is no card checkout on this server; use the demo card.")
    account = _open_account(user)
    setting = _setting_for(account)
    if not setting.customer_id:
        customer_id = stripe_client.customer_create(
            email=getattr(user, "email", "") or "",
            user_id=user.pk,
            idempotency_key=f"panels-customer-{account.pk}-{_key_stamp(account.created_at)}",
        )
        AutoTopup.objects.filter(pk=setting.pk, customer_id="").update(customer_id=customer_id)
        setting.refresh_from_db()
    started = timezone.now()
    AutoTopup.objects.filter(pk=setting.pk).update(setup_started_at=started)
    session = stripe_client.setup_session_create(
        customer_id=setting.customer_id,
        metadata={"purpose": "autotopup_card", "account_id": str(account.pk), "user_id": str(user.pk)},
        success_url=urljoin(base_url, reverse("autotopup_card_done")) + "?session_id={CHECKOUT_SESSION_ID}",
        cancel_url=urljoin(base_url, reverse("wallet")) + "#auto-topup",
        idempotency_key=f"panels-card-setup-{account.pk}-{_key_stamp(started)}",
    )
    AutoTopup.objects.filter(pk=setting.pk).update(setup_session_id=session.id)
    return session.url


def _card_saved(
    setting: AutoTopup, *, provider: str, payment_method_id: str, brand: str, last4: str, declines: bool = False
) -> str:
    """Store a new card on the locked setting; lift a pause. Returns the card it replaced, if any."""
    replaced = setting.payment_method_id if setting.payment_method_id != payment_method_id else ""
    setting.provider = provider
    setting.payment_method_id = payment_method_id
    setting.card_brand = brand[:30]
    setting.card_last4 = last4[:4]
    setting.demo_declines = declines
    setting.paused_at = None
    setting.paused_reason = ""
    setting.notified_at = None
    setting.save()
    return replaced


def autotopup_card_setup_complete(*, session: dict) -> bool:
    """A setup-mode Checkout Session completed: save its card. The webhook and the return
    page both come here; the second finds the card saved and does nothing. True if saved.

    Only the wallet's latest set-up counts, so a late event for an older one can't bring
    back a card the user replaced. Call with no transaction open (it may call Stripe).
    """
    metadata = session.get("metadata") or {}
    account_id = str(metadata.get("account_id") or "")
    if metadata.get("purpose") != "autotopup_card" or not account_id.isdigit():
        return False
    card = stripe_client.setup_session_card(session=session)
    if card is None:
        return False
    with transaction.atomic():
        setting = AutoTopup.objects.select_for_update().filter(account_id=int(account_id)).first()
        if setting is None or setting.setup_session_id != session.get("id"):
            log.info("card set-up is not the latest; ignored", extra={"session": session.get("id")})
            return False
        if setting.customer_id and card.customer_id and card.customer_id != setting.customer_id:
            log.error("card set-up for another customer; ignored", extra={"session": session.get("id")})
            return False
        if setting.payment_method_id == card.payment_method_id:
            return False
        replaced = _card_saved(
            setting,
            provider=AutoTopup.Provider.STRIPE,
            payment_method_id=card.payment_method_id,
            brand=card.brand,
            last4=card.last4,
        )
    _detach(replaced)
    log.info("card saved for automatic top-ups", extra={"account_id": setting.pk})
    return True


def autotopup_demo_card_save(*, user: AbstractBaseUser, declines: bool) -> AutoTopup:
    """Save the demo card (no card is charged), or the demo card that is always declined."""
    if _provider() != AutoTopup.Provider.DEMO:
        raise AutoTopupUnavailable("There is no demo card on this server.")
    account = _open_account(user)
    with transaction.atomic():
        setting = AutoTopup.objects.select_for_update().get(pk=_setting_for(account).pk)
        _card_saved(
            setting,
            provider=AutoTopup.Provider.DEMO,
            payment_method_id="demo_declining_card" if declines else "demo_card",
            brand="demo",
            last4="0002" if declines else "4242",
            declines=declines,
        )
    return setting


def _forget_card(setting: AutoTopup) -> str:
    """Clear the card from the locked setting and turn it off; returns the card to detach on Stripe."""
    method = setting.payment_method_id if setting.provider == AutoTopup.Provider.STRIPE else ""
    setting.enabled = False
    setting.payment_method_id = setting.card_brand = setting.card_last4 = ""
    setting.demo_declines = False
    setting.save(
        update_fields=["enabled", "payment_method_id", "card_brand", "card_last4", "demo_declines", "updated_at"]
    )
    return method


def _detach(payment_method_id: str) -> None:
    """Best effort: a card we forgot stays unusable to us either way, since its id is gone."""
    if not payment_method_id or not stripe_client.stripe_enabled():
        return
    try:
        stripe_client.payment_method_detach(payment_method_id=payment_method_id)
    except stripe_client.StripeUnavailable:
        log.warning("could not detach a forgotten card", extra={"payment_method": payment_method_id})


def autotopup_card_remove(*, user: AbstractBaseUser) -> None:
    """Forget the saved card (detached on Stripe) and turn automatic top-ups off."""
    with transaction.atomic():
        setting = AutoTopup.objects.select_for_update().filter(account__user=user).first()
        if setting is None:
            return
        method = _forget_card(setting)
    _detach(method)


def autotopup_forget(*, account: Account) -> None:
    """For account deletion, inside its transaction: drop the setting. Once that commits, the
    Stripe Customer is deleted (its saved cards and the email it holds go with it), or, with no
    Customer, the card is detached."""
    from wallet.stripe_privacy import stripe_customer_erase

    setting = AutoTopup.objects.select_for_update().filter(account=account).first()
    if setting is None:
        return
    customer_id = setting.customer_id  # only ever a Stripe one, made when a card set-up started
    method = _forget_card(setting)
    setting.delete()
    if customer_id:
        transaction.on_commit(lambda: stripe_customer_erase(customer_id=customer_id), robust=True)
    else:
        transaction.on_commit(lambda: _detach(method), robust=True)


def autotopup_resume(*, user: AbstractBaseUser) -> AutoTopup | None:
    """Lift a pause (the user fixed the card); charges again at once if the balance is below."""
    _open_account(user)
    with transaction.atomic():
        setting = AutoTopup.objects.select_for_update().filter(account__user=user).first()
        if setting is None:
            return None
        setting.paused_at = None
        setting.paused_reason = ""
        setting.notified_at = None
        setting.save(update_fields=["paused_at", "paused_reason", "notified_at", "updated_at"])
        account_id = setting.pk
        transaction.on_commit(lambda: autotopup_after_spend(account_id=account_id), robust=True)
    return setting


# -- the trigger -----------------------------------------------------------------------


def _due() -> object:
    """Settings that should charge now: on, with a card, not paused, below the threshold."""
    return (
        AutoTopup.objects.filter(enabled=True, paused_at__isnull=True)
        .exclude(payment_method_id="")
        .filter(account__balance__lt=F("threshold") + F("account__held"), account__frozen_reason="")
    )


_ON = "SELECT 1 FROM wallet_autotopup WHERE account_id = %s AND enabled AND paused_at IS NULL"


def autotopup_after_spend(*, account_id: int) -> bool:
    """After a spend commits: queue a top-up if this wallet is now below its threshold.

    On the settlement path, so the common case (no automatic top-up on) is one primary-key
    read in plain SQL, without the ORM's cost; the full check only where one is on.
    """
    with connection.cursor() as cursor:
        cursor.execute(_ON, [account_id])
        if cursor.fetchone() is None:
            return False
    if not _due().filter(account_id=account_id).exists():
        return False
    autotopup_queue(account_id=account_id)
    return True


def autotopup_queue(*, account_id: int) -> None:
    """Best effort: a task that was not queued is started by the next sweep."""
    from wallet.tasks import autotopup_run

    try:
        autotopup_run.delay(account_id)
    except Exception:
        log.warning("could not queue an automatic top-up", extra={"account_id": account_id})


def _pause(setting: AutoTopup, reason: str) -> None:
    AutoTopup.objects.filter(pk=setting.pk).update(
        paused_at=timezone.now(), paused_reason=reason[:300], notified_at=None, updated_at=timezone.now()
    )


def autotopup_start(*, account_id: int) -> Topup | None:
    """Record the attempt to charge (a Topup of kind auto), or None when none is due.

    An attempt already recorded and not yet answered is returned instead of a new one:
    a retried task charges it again with the same key.
    """
    pause_reason = ""
    with transaction.atomic():
        setting = AutoTopup.objects.select_for_update().filter(account_id=account_id).first()
        in_flight = Topup.objects.filter(account_id=account_id, kind=Topup.Kind.AUTO, status__in=IN_FLIGHT).first()
        if in_flight is not None:
            # Unanswered: charged again with its key (or ended, if the card is gone meanwhile).
            return in_flight if in_flight.status == Topup.Status.CREATED else None
        if setting is None or not setting.enabled or setting.paused or not setting.has_card:
            return None
        account = Account.objects.select_related("user").get(pk=account_id)
        if account.frozen or account.available >= setting.threshold:
            return None
        try:
            provider = _provider()
        except AutoTopupUnavailable as exc:
            log.warning("automatic top-up not possible", extra={"account_id": account_id, "reason": str(exc)})
            return None
        if provider != setting.provider:
            pause_reason = "The saved card belongs to another payment setup of this server. Add your card again."
        else:
            since = timezone.now() - dt.timedelta(days=1)
            recent = Topup.objects.filter(account_id=account_id, kind=Topup.Kind.AUTO, created_at__gte=since).count()
            if recent >= settings.AUTOTOPUP_MAX_PER_DAY:
                pause_reason = (
                    f"Paused after {recent} automatic top-ups in 24 hours, the most allowed. Resume it when you are "
                    "ready, or top up by hand."
                )
        if pause_reason:
            _pause(setting, pause_reason)
        else:
            try:
                with transaction.atomic():
                    topup = Topup.objects.create(
                        user=account.user,
                        account=account,
                        provider=setting.provider,
                        kind=Topup.Kind.AUTO,
                        amount_cents=setting.amount_cents,
                        credits=credits_for_cents(setting.amount_cents),
                    )
                    topup.checkout_session_id = f"{AUTO_SESSION_PREFIX}{topup.pk}"
                    topup.save(update_fields=["checkout_session_id", "updated_at"])
            except IntegrityError:
                return None  # another attempt was recorded meanwhile (the unique index)
            AutoTopup.objects.filter(pk=setting.pk).update(last_attempt=topup, updated_at=timezone.now())
            log.info("automatic top-up recorded", extra={"account_id": account_id, "topup_id": topup.pk})
            return topup
    if pause_reason:
        autotopup_notify(account_id=account_id)
    return None


def _metadata(topup: Topup) -> dict[str, str]:
    return {
        "topup_id": str(topup.pk),
        "user_id": str(topup.user_id),
        "credits": str(topup.credits),
        "kind": Topup.Kind.AUTO,
    }


def autotopup_paid(
    *, topup: Topup, payment_intent_id: str, amount: int | None, currency: str, metadata: dict[str, str]
) -> FulfilResult:
    """Credit a paid automatic top-up through the one fulfilment path (once), then apply
    the Stripe events that waited for it. Call with no transaction open."""
    result = topup_fulfil(
        session_id=topup.checkout_session_id or "",
        payment_status="paid",
        payment_intent_id=payment_intent_id,
        amount_total=amount,
        currency=currency,
        metadata=metadata,
    )
    if result.credited and result.topup is not None and result.topup.provider == Topup.Provider.STRIPE:
        # Lazily: the event engine imports this module for its payment_intent handlers.
        from wallet.stripe_events import stripe_events_apply_deferred

        stripe_events_apply_deferred(topup=result.topup)
        topup_fetch_receipt(topup=result.topup)
    return result


def autotopup_failed(*, topup: Topup, reason: str) -> bool:
    """The charge failed: mark the attempt failed, pause, email once. True if this call did it."""
    with transaction.atomic():
        failed = Topup.objects.filter(pk=topup.pk, credited_at__isnull=True, status__in=IN_FLIGHT).update(
            status=Topup.Status.FAILED, updated_at=timezone.now()
        )
        setting = AutoTopup.objects.select_for_update().filter(account_id=topup.account_id).first()
        if failed and setting is not None and not setting.paused:
            _pause(setting, reason)
    if failed:
        log.warning("automatic top-up failed", extra={"topup_id": topup.pk, "reason": reason})
        autotopup_notify(account_id=topup.account_id)
    return bool(failed)


def failure_text(charge: stripe_client.OffSessionCharge) -> str:
    if charge.status == "requires_action" or charge.error_code == "authentication_required":
        return (
            "Your bank asked to confirm the payment, which can't be done while you are away. "
            "Add the card again (confirming it with your bank), or use another card."
        )
    message = charge.error_message or "The card was declined."
    return f"The card was declined: {message}".replace("declined: Your card was declined.", "declined.")


def autotopup_charge(*, topup_id: int) -> str:
    """Charge the saved card for a recorded attempt and credit it if paid. Idempotent: a
    second call sends the same key and gets the first answer; a credited attempt is left alone."""
    topup = Topup.objects.select_related("account").get(pk=topup_id)
    if topup.kind != Topup.Kind.AUTO or topup.credited_at is not None or topup.status != Topup.Status.CREATED:
        return f"top-up {topup.pk} is {topup.status}"
    setting = AutoTopup.objects.filter(account_id=topup.account_id).first()
    if setting is None or not setting.has_card or not setting.enabled:
        # The user turned it off or removed the card after the attempt was recorded. Had an
        # earlier try been charged after all, its payment_intent.succeeded still credits it.
        Topup.objects.filter(pk=topup.pk, status=Topup.Status.CREATED).update(
            status=Topup.Status.FAILED, updated_at=timezone.now()
        )
        return f"top-up {topup.pk}: turned off or card removed before it was charged"
    if topup.provider == Topup.Provider.DEMO:
        if not demo_checkout_enabled():
            autotopup_failed(topup=topup, reason="The demo card can't be charged on this server.")
            return f"top-up {topup.pk}: no demo here"
        if setting.demo_declines:
            autotopup_failed(topup=topup, reason="The card was declined (the demo declining card; no card is charged).")
            return f"top-up {topup.pk}: declined (demo)"
        return autotopup_paid(
            topup=topup,
            payment_intent_id="",
            amount=topup.amount_cents,
            currency=settings.STRIPE_CURRENCY,
            metadata=_metadata(topup),
        ).outcome
    try:
        # No transaction is open: the attempt row is committed, so its key is known to any retry.
        charge = stripe_client.payment_intent_off_session(
            amount_cents=topup.amount_cents,
            customer_id=setting.customer_id,
            payment_method_id=setting.payment_method_id,
            metadata=_metadata(topup),
            description=f"{settings.SITE_NAME} automatic top-up: {topup.credits:,} credits",
            idempotency_key=charge_idempotency_key(topup),
        )
    except stripe_client.StripeUnavailable as exc:
        # If Stripe did charge after all, its payment_intent.succeeded event still credits it.
        autotopup_failed(topup=topup, reason=f"Stripe could not charge the card just now ({str(exc)[:120]}).")
        return f"top-up {topup.pk}: Stripe error"
    if charge.payment_intent_id:
        Topup.objects.filter(pk=topup.pk, payment_intent_id="").update(payment_intent_id=charge.payment_intent_id)
    if charge.status == "succeeded":
        return autotopup_paid(
            topup=topup,
            payment_intent_id=charge.payment_intent_id,
            amount=charge.amount,
            currency=charge.currency,
            metadata=charge.metadata or _metadata(topup),
        ).outcome
    if charge.status == "processing":
        Topup.objects.filter(pk=topup.pk, status=Topup.Status.CREATED).update(
            status=Topup.Status.PENDING, updated_at=timezone.now()
        )
        return f"top-up {topup.pk}: processing; the webhook finishes it"
    autotopup_failed(topup=topup, reason=failure_text(charge))
    return f"top-up {topup.pk}: {charge.status} ({charge.error_code})"


def autotopup_run(*, account_id: int) -> str:
    """The task: record an attempt if one is due, then charge it."""
    topup = autotopup_start(account_id=account_id)
    if topup is None:
        return "nothing due"
    return autotopup_charge(topup_id=topup.pk)


# -- emails and the sweep ------------------------------------------------------------------


def autotopup_notify(*, account_id: int) -> bool:
    """Email the user that automatic top-ups are paused, and why: once per pause."""
    from wallet.alerts import send_wallet_email

    now = timezone.now()
    if not AutoTopup.objects.filter(account_id=account_id, paused_at__isnull=False, notified_at__isnull=True).update(
        notified_at=now
    ):
        return False
    setting = AutoTopup.objects.select_related("account__user", "last_attempt").get(account_id=account_id)
    try:
        send_wallet_email(
            to=setting.account.user.email,
            template="autotopup_paused",
            context={
                "setting": setting,
                "amount": usd_text(Decimal(setting.amount_cents) / 100),
                "wallet_url": settings.SITE_URL + reverse("wallet") + "#auto-topup",
            },
        )
    except Exception:
        AutoTopup.objects.filter(account_id=account_id, notified_at=now).update(notified_at=None)
        log.exception("automatic top-up email failed", extra={"account_id": account_id})
        return False
    return True


def autotopups_sweep() -> dict[str, int]:
    """The backstop, run by every worker's sweep: pause emails not sent, attempts whose
    task was lost (charged again with their own key), and wallets below their threshold
    whose trigger was lost."""
    notified = sum(
        autotopup_notify(account_id=pk)
        for pk in AutoTopup.objects.filter(paused_at__isnull=False, notified_at__isnull=True).values_list(
            "account_id", flat=True
        )
    )
    retried = 0
    stale = Topup.objects.filter(
        kind=Topup.Kind.AUTO, status=Topup.Status.CREATED, created_at__lt=timezone.now() - STALE_ATTEMPT
    )
    # Queued, not charged here: the sweep runs in the worker's heartbeat thread, which a
    # slow Stripe call must not hold up. The task finds the attempt and charges it again.
    for account_id in stale.values_list("account_id", flat=True):
        autotopup_queue(account_id=account_id)
        retried += 1
    queued = 0
    busy = Topup.objects.filter(kind=Topup.Kind.AUTO, status__in=IN_FLIGHT).values("account_id")
    for account_id in _due().exclude(account_id__in=busy).values_list("account_id", flat=True):
        autotopup_queue(account_id=account_id)
        queued += 1
    return {"notified": notified, "retried": retried, "queued": queued}
