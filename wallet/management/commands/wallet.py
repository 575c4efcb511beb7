from __future__ import annotations

import hashlib

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from wallet.models import Entry
from wallet.selectors import ledger_audit
from wallet.services import wallet_for_user, wallet_grant


class Command(BaseCommand):
    help = "Wallet operations: grant credits, audit every balance against the ledger."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        grant = sub.add_parser("grant", help="Grant (or, with a negative amount, take back) credits.")
        grant.add_argument("email")
        grant.add_argument("credits", type=int)
        grant.add_argument("--reason", required=True)
        grant.add_argument(
            "--key",
            help="Idempotency key; repeating it grants once. Default: derived from the email, "
            "credits and reason, so rerunning the same command grants once.",
        )
        audit = sub.add_parser(
            "audit", help="Verify the entries since the last clean audit, and every balance; exit 1 on any mismatch."
        )
        audit.add_argument("--full", action="store_true", help="Verify every entry from the first one.")
        sub.add_parser(
            "emails", help="Send due low-balance alerts and unsent top-up receipts (workers do it each minute)."
        )

    def handle(self, *args: object, action: str, **options: object) -> None:
        if action == "grant":
            self._grant(**options)
        elif action == "emails":
            from wallet.alerts import wallet_emails_sweep

            sent = wallet_emails_sweep()
            self.stdout.write(f"{sent['alerts']} low-balance alerts and {sent['receipts']} receipts sent.")
        else:
            self._audit(full=bool(options.get("full")))

    def _grant(self, *, email: str, credits: int, reason: str, key: str | None, **_: object) -> None:
        user = get_user_model().objects.filter(email__iexact=email).first()
        if user is None:
            raise CommandError(f"No user with email {email}.")
        if credits == 0:
            raise CommandError("CREDITS must not be zero.")
        if not key:
            # A rerun (a retried deploy script, a shell's history) must not grant twice;
            # a second grant of the same credits for the same reason takes its own --key.
            reason_digest = hashlib.sha256(reason.strip().encode()).hexdigest()[:16]
            key = f"cli-grant:{user.pk}:{credits}:{reason_digest}"
        already = Entry.objects.filter(idempotency_key=key).exists()
        try:
            entry = wallet_grant(
                account=wallet_for_user(user=user),
                amount=credits,
                reason=reason,
                actor="cli",
                idempotency_key=key,
            )
        except Exception as exc:  # the command's user needs the reason, not a traceback
            raise CommandError(str(exc)) from exc
        balance = wallet_for_user(user=user).balance
        if already:
            self.stdout.write(f"Already done under key {key} (nothing granted again); balance {balance}.")
        else:
            self.stdout.write(f"{entry.kind} of {entry.amount} credits to {email}; balance now {balance}.")

    def _audit(self, *, full: bool) -> None:
        problems = ledger_audit(full=full)
        if problems:
            for problem in problems:
                self.stderr.write(f"MISMATCH {problem}")
            raise CommandError(f"Audit failed: {len(problems)} problem(s).", returncode=1)
        self.stdout.write(self.style.SUCCESS("Audit clean: every balance matches its entries."))
