from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction


@transaction.atomic
def user_delete(*, user: AbstractBaseUser) -> None:
    """Close an account without touching the ledger.

    Ledger entries must stay (balances are rebuilt from them), so the user row is
    deactivated and stripped of personal data instead of deleted.
    """
    from allauth.account.models import EmailAddress

    EmailAddress.objects.filter(user=user).delete()
    user.api_keys.all().delete()
    anonymous = f"deleted-{uuid.uuid4().hex[:12]}"
    user.username = anonymous
    user.email = f"{anonymous}@deleted.invalid"
    user.first_name = user.last_name = ""
    user.is_active = False
    user.set_unusable_password()
    user.save()
