from __future__ import annotations

import uuid

from wallet.models import Account, Entry
from wallet.services import wallet_credit, wallet_for_user


def funded_wallet(user, credits: int) -> Account:
    account = wallet_for_user(user=user)
    if credits:
        wallet_credit(account=account, amount=credits, kind=Entry.Kind.GRANT, idempotency_key=f"seed:{uuid.uuid4()}")
    account.refresh_from_db()
    return account
