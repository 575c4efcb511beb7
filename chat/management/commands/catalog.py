from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.models import ModelSpec
from chat.price_sync import catalog_apply, catalog_diff


def _price(value: str) -> Decimal:
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise CommandError(f"not a price: {value!r} (USD per 1M tokens, e.g. 0.15 or 0)") from None
    if price < 0 or not price.is_finite():
        raise CommandError("prices are zero or more")
    return price


class Command(BaseCommand):
    help = (
        "The model catalog. `sync`: compare prices and context windows with the installed genai-prices "
        "dataset and, with --apply, write the differences. `add`: register a self-hosted OpenAI-compatible "
        "server (Ollama, vLLM, llama.cpp, LM Studio) as a model."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sync = sub.add_parser("sync", help="Show (and with --apply, write) price and context-window changes.")
        sync.add_argument("--apply", action="store_true", help="Write the differences shown.")
        sync.add_argument("--at", help="Prices in force on this date (YYYY-MM-DD); default now.")
        add = sub.add_parser("add", help="Add an OpenAI-compatible server as a catalog model.")
        add.add_argument("slug")
        add.add_argument("--name", required=True)
        add.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:11434/v1 for Ollama")
        add.add_argument("--upstream-id", required=True, help="the model's name on that server")
        add.add_argument("--key-env", default="", help="the environment variable holding its key, if any")
        add.add_argument("--input-price", default="0", help="USD per 1M input tokens (0 allowed)")
        add.add_argument("--output-price", default="0", help="USD per 1M output tokens (0 allowed)")
        add.add_argument("--context-window", type=int, default=8_192)
        add.add_argument("--max-output-tokens", type=int, default=1_024)
        add.add_argument("--images", action="store_true", help="the model reads images")
        add.add_argument("--provider", default="Self-hosted")

    def handle(self, *args: object, action: str, **options: object) -> None:
        if action == "sync":
            self._sync(apply=bool(options["apply"]), at=options.get("at"))
        else:
            self._add(**options)

    def _sync(self, *, apply: bool, at: object) -> None:
        when = None
        if at:
            try:
                when = dt.datetime.combine(dt.date.fromisoformat(str(at)), dt.time(12), tzinfo=dt.UTC)
            except ValueError:
                raise CommandError("--at takes a date as YYYY-MM-DD") from None
        changes, unlisted = catalog_diff(at=when)
        for slug in unlisted:
            self.stdout.write(f"{slug}: not in the genai-prices dataset; left as it is")
        if not changes:
            self.stdout.write("The catalog matches the genai-prices dataset: nothing to change.")
            return
        for change in changes:
            self.stdout.write(str(change))
        if apply:
            count = catalog_apply(changes, at=when)
            self.stdout.write(f"Applied: {len(changes)} changes to {count} models.")
        else:
            self.stdout.write(f"{len(changes)} changes; run again with --apply to write them.")

    def _add(self, *, slug: str, **o: object) -> None:
        if ModelSpec.objects.filter(slug=slug).exists():
            raise CommandError(f"there is already a model {slug!r}; edit it in the admin")
        key_env = str(o["key_env"])
        spec = ModelSpec(
            slug=slug,
            name=str(o["name"]),
            provider=str(o["provider"]),
            api=ModelSpec.Api.OPENAI_COMPATIBLE,
            upstream_id=str(o["upstream_id"]),
            base_url=str(o["base_url"]),
            api_key_env=key_env,
            input_price=_price(str(o["input_price"])),
            output_price=_price(str(o["output_price"])),
            prices_source="manual",
            context_window=int(o["context_window"]),  # type: ignore[call-overload]
            max_output_tokens=int(o["max_output_tokens"]),  # type: ignore[call-overload]
            image_input=bool(o["images"]),
        )
        try:
            spec.full_clean()
        except Exception as exc:
            raise CommandError(str(exc)) from None
        spec.save()
        self.stdout.write(f"Added {spec.name} ({slug}) at {spec.base_url}, model {spec.upstream_id}.")
        if key_env and not os.environ.get(key_env):
            self.stdout.write(f"{key_env} is not set here: the model stays unavailable until it is.")
