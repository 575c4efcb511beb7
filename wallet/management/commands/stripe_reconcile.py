"""Credit paid Checkout Sessions whose webhook never arrived; safe to run again and again."""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from wallet import stripe_client
from wallet.models import StripeEvent, Topup
from wallet.stripe_events import stripe_events_apply_deferred, stripe_session_fulfil
from wallet.topups import TopupMismatch, topup_fetch_receipt

DEFAULT_DAYS = 3  # Checkout Sessions expire after a day; a few days covers a long outage.


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--since must be a date like 2026-01-31, not {value!r}.")


class Command(BaseCommand):
    help = "List paid Stripe Checkout Sessions and credit any top-up that was never credited (lost webhook)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=_date, help="Look at sessions created on or after this date (UTC).")

    def handle(self, *args: object, since: dt.date | None = None, **options: object) -> None:
        if not stripe_client.stripe_enabled():
            raise CommandError("STRIPE_SECRET_KEY is not set: there is nothing to reconcile against.")
        start = (
            dt.datetime.combine(since, dt.time.min, tzinfo=dt.UTC)
            if since
            else timezone.now() - dt.timedelta(days=DEFAULT_DAYS)
        )
        self.stdout.write(f"Checking paid Checkout Sessions created since {start:%Y-%m-%d %H:%M} UTC.")
        counts = {"paid": 0, "credited": 0, "already": 0, "unmatched": 0, "mismatched": 0}
        try:
            sessions = list(stripe_client.checkout_sessions_since(created_gte=int(start.timestamp())))
        except stripe_client.StripeUnavailable as exc:
            raise CommandError(f"Stripe could not be reached: {exc}")
        for session in sessions:
            if session.payment_status != "paid":
                continue
            counts["paid"] += 1
            try:
                result = stripe_session_fulfil(session=session)
            except TopupMismatch as exc:
                counts["mismatched"] += 1
                self.stderr.write(f"MISMATCH {session.id}: {exc}")
                continue
            if result.topup is None:
                counts["unmatched"] += 1
                self.stdout.write(f"skipped {session.id}: not a top-up of this server")
                continue
            topup_fetch_receipt(topup=result.topup)
            if result.credited:
                counts["credited"] += 1
                self.stdout.write(
                    f"credited top-up {result.topup.pk} ({session.id}): {result.topup.credits} credits "
                    f"to user {result.topup.user_id}"
                )
            else:
                counts["already"] += 1
        replayed = self._replay_deferred()
        self.stdout.write(
            self.style.SUCCESS(
                f"{counts['paid']} paid session(s): {counts['credited']} credited now, {counts['already']} already "
                f"credited, {counts['unmatched']} not ours, {counts['mismatched']} mismatched; "
                f"{replayed} waiting event(s) applied."
            )
        )
        if counts["mismatched"]:
            raise CommandError("Some paid sessions do not match their top-ups; see above.", returncode=1)

    def _replay_deferred(self) -> int:
        """Events kept for a top-up that is now credited (a replay that failed earlier)."""
        topup_ids = (
            StripeEvent.objects.filter(status=StripeEvent.Status.DEFERRED, topup__credited_at__isnull=False)
            .values_list("topup_id", flat=True)
            .distinct()
        )
        applied = 0
        for topup in Topup.objects.filter(pk__in=list(topup_ids)):
            applied += stripe_events_apply_deferred(topup=topup)
        return applied
