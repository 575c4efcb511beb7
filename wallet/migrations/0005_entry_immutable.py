"""Entries belong to a wallet's chain, and the database refuses UPDATE and DELETE of
entries (a separate migration from 0004's data step: PostgreSQL won't alter a table
with pending deferred-constraint events in the same transaction)."""

import django.db.models.deletion
from django.db import migrations, models

from wallet import immutability


def install_triggers(apps, schema_editor):
    immutability.install(schema_editor.connection)


def drop_triggers(apps, schema_editor):
    immutability.drop(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("wallet", "0004_entry_chain"),
    ]

    operations = [
        migrations.AlterField(
            model_name="entry",
            name="wallet",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="chain", to="wallet.account"
            ),
        ),
        migrations.AddIndex(
            model_name="entry",
            index=models.Index(fields=["wallet", "id"], name="wallet_entry_chain_idx"),
        ),
        migrations.RunPython(install_triggers, drop_triggers),
    ]
