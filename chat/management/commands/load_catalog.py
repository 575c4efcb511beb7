from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from chat.catalog import DEFAULT_CATALOG, demo_entry
from chat.models import ModelSpec


class Command(BaseCommand):
    help = "Load the default model catalog; models the operator already has are left as edited."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reset", action="store_true", help="Overwrite existing models with the defaults.")

    def handle(self, *args: object, reset: bool, **options: object) -> None:
        created = 0
        # The demo model never exists in production: its row is not even created there.
        entries = [demo_entry(), *DEFAULT_CATALOG] if settings.DEMO_ALLOWED else list(DEFAULT_CATALOG)
        for entry in entries:
            fields = dict(entry)
            slug = fields.pop("slug")
            if reset:
                ModelSpec.objects.update_or_create(slug=slug, defaults=fields)
            else:
                _, made = ModelSpec.objects.get_or_create(slug=slug, defaults=fields)
                created += made
        # The demo server's address follows the environment even when the rest was edited.
        ModelSpec.objects.filter(slug="demo").update(base_url=demo_entry()["base_url"])
        self.stdout.write(f"Catalog loaded: {ModelSpec.objects.count()} models ({created} new).")
