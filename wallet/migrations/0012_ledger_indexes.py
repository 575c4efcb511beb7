"""Fewer indexes on the ledger's hot tables: each is one more write per entry or hold.

The entry's account columns lose their single-column indexes (the (account,
-created_at) indexes and the chain index (wallet, id) lead with them), and on
PostgreSQL the `varchar_pattern_ops` copies Django adds beside the idempotency-key
and reference indexes go: nothing filters those columns with a prefix LIKE (the
admin's search is a contains, which no btree serves). SQLite rebuilds the table to
alter a column and drops its triggers with it, so they are installed again.
"""

import django.db.models.deletion
from django.db import migrations, models

from wallet import immutability

_LIKE = [("wallet_entry", "idempotency_key"), ("wallet_entry", "reference"), ("wallet_hold", "idempotency_key")]


def _like_names(schema_editor):
    return [
        (table, column, schema_editor._create_index_name(table, [column], suffix="_like")) for table, column in _LIKE
    ]


def drop_like_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for _, _, name in _like_names(schema_editor):
            schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def create_like_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table, column, name in _like_names(schema_editor):
            q = schema_editor.quote_name
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {q(name)} ON {q(table)} ({q(column)} varchar_pattern_ops)"
            )


def install_triggers(apps, schema_editor):
    immutability.install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("wallet", "0011_auto_topup"),
    ]

    operations = [
        migrations.AlterField(
            model_name="entry",
            name="credit_account",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="credits", to="wallet.account"
            ),
        ),
        migrations.AlterField(
            model_name="entry",
            name="debit_account",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="debits", to="wallet.account"
            ),
        ),
        migrations.AlterField(
            model_name="entry",
            name="wallet",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="chain", to="wallet.account"
            ),
        ),
        migrations.RunPython(drop_like_indexes, create_like_indexes),
        migrations.RunPython(install_triggers, install_triggers),
    ]
