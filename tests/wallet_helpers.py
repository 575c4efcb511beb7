from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from wallet import immutability
from wallet.models import Account, Entry
from wallet.services import wallet_credit, wallet_for_user


def funded_wallet(user, credits: int) -> Account:
    account = wallet_for_user(user=user)
    if credits:
        wallet_credit(account=account, amount=credits, kind=Entry.Kind.GRANT, idempotency_key=f"seed:{uuid.uuid4()}")
    account.refresh_from_db()
    return account


@contextmanager
def immutability_lifted() -> Iterator[None]:
    """What someone with the tables' owner rights could do: drop the trigger, edit, restore."""
    immutability.drop(connection)
    try:
        yield
    finally:
        immutability.install(connection)
