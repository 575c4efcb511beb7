"""Less work per ledger write: each index is one more insert per row, each foreign key
one more look-up (and row lock) per row, and a hold is written twice (placed, resolved).

- Entries lose the (debit_account, -created_at) and (credit_account, -created_at)
  indexes and the reference index: a wallet's statement reads its chain (the
  (wallet, id) index), accounts are never deleted, nothing looks entries up by reference.
- The entry's wallet loses its foreign key for a CHECK that it is the debit or the
  credit account, both of which keep theirs: as safe (stricter: the audit's on-wallet
  rule is now the database's) without the look-up.
- Holds lose the index on their account (nothing looks holds up by wallet), and the
  (status, expires_at) index becomes (expires_at) on pending holds only: a posted or
  voided hold's new row version is not added to it, and it stays the size of the holds
  in flight. The expiry sweep and the audit's held sums read it.

SQLite rebuilds a table to alter it, dropping its triggers: they are installed again.
"""

import django.db.models.deletion
from django.db import migrations, models

from wallet import immutability


def install_triggers(apps, schema_editor):
    immutability.install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("wallet", "0013_topup_reconcile_index"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="hold",
            index=models.Index(
                condition=models.Q(("status", "pending")), fields=["expires_at"], name="hold_pending_expiry_idx"
            ),
        ),
        migrations.RemoveIndex(model_name="hold", name="wallet_hold_status_a10058_idx"),
        migrations.AlterField(
            model_name="hold",
            name="account",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="holds", to="wallet.account"
            ),
        ),
        migrations.RemoveIndex(model_name="entry", name="wallet_entr_debit_a_771ce5_idx"),
        migrations.RemoveIndex(model_name="entry", name="wallet_entr_credit__6102b3_idx"),
        migrations.AlterField(
            model_name="entry",
            name="reference",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddConstraint(
            model_name="entry",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("wallet", models.F("debit_account")), ("wallet", models.F("credit_account")), _connector="OR"
                ),
                name="entry_wallet_is_a_side",
            ),
        ),
        migrations.AlterField(
            model_name="entry",
            name="wallet",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="chain",
                to="wallet.account",
            ),
        ),
        migrations.RunPython(install_triggers, install_triggers),
    ]
