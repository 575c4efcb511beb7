"""Data for the reliability tests, written through the services into the database that
DATABASE_URL names (run in a subprocess: the tests' own process stays on its test database).

    python -m tests.reliability.seed users --count 50 --credits 20000000   # JSON on stdout
    python -m tests.reliability.seed ledger --count 5                      # a ledger with every kind of movement
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panels.settings")
    import django

    django.setup()


def users(*, count: int, credits: int, prefix: str) -> list[dict]:
    """Confirmed users, each with a funded wallet, an API key and a logged-in session."""
    from allauth.account.models import EmailAddress
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    from panels.models import ApiKey
    from wallet.services import wallet_for_user, wallet_grant

    out = []
    for i in range(count):
        email = f"{prefix}{i}@example.com"
        user = get_user_model().objects.create_user(username=f"{prefix}{i}", email=email, password=uuid.uuid4().hex)
        EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
        if credits:
            wallet_grant(
                account=wallet_for_user(user=user),
                amount=credits,
                reason="reliability test funds",
                actor="seed",
                idempotency_key=f"seed:{email}",
            )
        _, key = ApiKey.issue(user=user, name="reliability")
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        out.append({"email": email, "user_id": user.pk, "api_key": key, "session": session.session_key})
    return out


def ledger(*, count: int) -> list[dict]:
    """Users whose ledgers hold grants, demo top-ups, posted, voided and pending holds."""
    from wallet.models import Topup
    from wallet.services import wallet_for_user, wallet_hold, wallet_post, wallet_void
    from wallet.topups import topup_create, topup_fulfil

    people = users(count=count, credits=1_000_000, prefix="ledger")
    from django.contrib.auth import get_user_model

    for n, person in enumerate(people):
        user = get_user_model().objects.get(pk=person["user_id"])
        account = wallet_for_user(user=user)
        topup = topup_create(user=user, amount_cents=100 * (n + 1), base_url="http://127.0.0.1/")
        assert topup.provider == Topup.Provider.DEMO
        topup_fulfil(
            session_id=topup.checkout_session_id,
            payment_status="paid",
            amount_total=topup.amount_cents,
            currency="usd",
            metadata={"topup_id": str(topup.pk), "user_id": str(user.pk)},
        )
        for i in range(5):
            hold = wallet_hold(account=account, amount=10_000 + i, idempotency_key=f"seed-hold:{user.pk}:{i}")
            if i % 3 == 0:
                wallet_post(hold=hold, amount=1_234 * (i + 1) + n, memo="seed usage")
            elif i % 3 == 1:
                wallet_void(hold=hold, reason="seed void")
            # i % 3 == 2: left pending, as a reply in flight at backup time would be
    return people


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="action", required=True)
    u = sub.add_parser("users")
    u.add_argument("--count", type=int, required=True)
    u.add_argument("--credits", type=int, default=20_000_000)
    u.add_argument("--prefix", default="user")
    led = sub.add_parser("ledger")
    led.add_argument("--count", type=int, default=5)
    args = parser.parse_args(argv)
    _setup()
    if args.action == "users":
        result = users(count=args.count, credits=args.credits, prefix=args.prefix)
    else:
        result = ledger(count=args.count)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
