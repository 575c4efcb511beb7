from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from chat.availability import models_check


class Command(BaseCommand):
    help = (
        "`check`: ask each configured provider which models it lists, with its key; models it no longer "
        "lists or refuses are marked unavailable (the admin shows why). Workers also run it every "
        "MODELS_CHECK_SECONDS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["check"])

    def handle(self, *args: object, **options: object) -> None:
        results = models_check()
        for r in results:
            state = {True: "ok", False: "UNAVAILABLE", None: "skipped"}[r.ok]
            self.stdout.write(f"{r.slug}: {state}" + (f" — {r.problem}" if r.problem else ""))
        bad = sum(r.ok is False for r in results)
        self.stdout.write(f"{len(results)} models, {bad} unavailable.")
