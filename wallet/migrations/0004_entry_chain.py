"""Chain each entry's digest to its wallet's previous entry (0005 then makes the
column required and lets the database refuse UPDATE and DELETE of entries).

Existing entries are verified against the digest they were written with first: a
mismatch stops the migration (history that was already changed is not re-blessed).
"""

import datetime as dt
import hashlib

import django.db.models.deletion
from django.db import migrations, models

from wallet import digests


def _old_digest(e) -> str:
    fields = [
        e.kind,
        e.debit_account_id,
        e.credit_account_id,
        e.amount,
        e.idempotency_key,
        e.reference,
        e.memo,
        e.hold_id,
        e.created_at.astimezone(dt.UTC).isoformat() if e.created_at.tzinfo else e.created_at.isoformat(),
    ]
    return hashlib.sha256("|".join(str(f) for f in fields).encode()).hexdigest()


def chain_existing(apps, schema_editor):
    Account = apps.get_model("wallet", "Account")
    Entry = apps.get_model("wallet", "Entry")
    user_ids = set(Account.objects.filter(kind="user").values_list("pk", flat=True))
    heads: dict[int, str] = {}
    for e in Entry.objects.order_by("pk").iterator(chunk_size=2000):
        if e.digest != _old_digest(e):
            raise RuntimeError(f"entry {e.pk} ({e.idempotency_key}) does not match its digest; audit before migrating")
        wallet_id = e.credit_account_id if e.credit_account_id in user_ids else e.debit_account_id
        content = digests.content_digest(
            kind=e.kind,
            debit_account_id=e.debit_account_id,
            credit_account_id=e.credit_account_id,
            amount=e.amount,
            idempotency_key=e.idempotency_key,
            reference=e.reference,
            memo=e.memo,
            hold_id=e.hold_id,
            created_at=e.created_at,
        )
        heads[wallet_id] = digests.chain(heads.get(wallet_id, ""), content)
        Entry.objects.filter(pk=e.pk).update(wallet_id=wallet_id, digest=heads[wallet_id])
    for wallet_id, head in heads.items():
        Account.objects.filter(pk=wallet_id).update(chain_head=head)


class Migration(migrations.Migration):
    dependencies = [
        ("wallet", "0003_hold_excess"),
    ]

    operations = [
        migrations.AddField(
            model_name="account",
            name="chain_head",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="entry",
            name="wallet",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.PROTECT, related_name="chain", to="wallet.account"
            ),
        ),
        migrations.RunPython(chain_existing, migrations.RunPython.noop),
    ]
