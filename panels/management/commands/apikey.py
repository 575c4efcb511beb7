from __future__ import annotations

import datetime as dt

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from panels.models import ApiKey


class Command(BaseCommand):
    help = "Create, list or revoke API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Print a new key once (only its hash is stored).")
        create.add_argument("email")
        create.add_argument("--name", default="")
        create.add_argument("--limit", type=int, default=None, help="Spend limit in credits (none by default).")
        create.add_argument("--period", choices=ApiKey.LimitPeriod.values, default=ApiKey.LimitPeriod.TOTAL)
        create.add_argument("--expires-days", type=int, default=None, help="Expire the key after this many days.")
        listing = sub.add_parser("list")
        listing.add_argument("email")
        revoke = sub.add_parser("revoke")
        revoke.add_argument("prefix")

    def handle(self, *args: object, action: str, **options: object) -> None:
        if action == "revoke":
            key = ApiKey.objects.filter(prefix=options["prefix"]).first()
            if key is None:
                raise CommandError(f"No key with prefix {options['prefix']}.")
            key.revoke()
            self.stdout.write(f"Revoked {key.prefix}.")
            return
        user = get_user_model().objects.filter(email__iexact=options["email"]).first()
        if user is None:
            raise CommandError(f"No user with email {options['email']}.")
        if action == "create":
            days = options["expires_days"]
            _, secret = ApiKey.issue(
                user=user,
                name=options["name"],
                spend_limit=options["limit"],
                limit_period=options["period"],
                expires_at=timezone.now() + dt.timedelta(days=days) if days else None,
            )
            self.stdout.write(secret)
            return
        for key in user.api_keys.all():
            if key.active:
                state = "active"
            elif key.revoked_at:
                state = f"revoked {key.revoked_at:%Y-%m-%d}"
            else:
                state = "expired"
            self.stdout.write(f"{key.prefix}  {key.name or '-'}  {key.created_at:%Y-%m-%d}  {state}  {key.limit_label}")
