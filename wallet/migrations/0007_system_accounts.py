"""Seed the system accounts, so the ids the ledger caches per process always exist."""

from django.db import migrations

CODES = ("stripe", "usage", "grants", "adjustments", "refunds")


def seed(apps, schema_editor):
    Account = apps.get_model("wallet", "Account")
    for code in CODES:
        Account.objects.get_or_create(kind="system", code=code)


class Migration(migrations.Migration):
    dependencies = [
        ("wallet", "0006_takebacks"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
