"""Route prompts in bulk: JSON lines in, one JSON line out per prompt. Nothing is stored or charged."""

from __future__ import annotations

import json
import sys
from typing import IO

from django.core.management.base import BaseCommand, CommandParser

from chat.errors import ChatError
from chat.routing import ROUTE_MAX_CHARS, route_for_message


def route_line(line: str) -> dict:
    """The answer for one input line: the route, or `{"error": ...}`."""
    try:
        item = json.loads(line)
    except ValueError as exc:
        return {"error": f"not JSON: {exc}"}
    if not isinstance(item, dict) or "prompt" not in item:
        return {"error": 'expected an object with a "prompt" string, e.g. {"prompt": "..."}'}
    prompt = item["prompt"]
    if not isinstance(prompt, str):
        return {"error": '"prompt" must be a string'}
    if not prompt.strip():
        return {"error": '"prompt" is empty'}
    if len(prompt) > ROUTE_MAX_CHARS:
        return {"error": f'"prompt" is longer than {ROUTE_MAX_CHARS:,} characters'}
    try:
        route = route_for_message(content=prompt)
    except ChatError as exc:
        return {"error": exc.message}
    return {"tier": route.tier, "model": route.spec.slug, "reason": route.reason}


class Command(BaseCommand):
    help = (
        'Read JSON lines {"prompt": "..."} on standard input and write, for each, the tier, model and reason '
        'Auto would pick, as JSON lines {"tier", "model", "reason"}. A bad line gets {"error": ...} and the '
        "rest go on; blank lines are skipped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--input", default="-", help="A file of JSON lines instead of standard input.")

    def handle(self, *args: object, input: str, **options: object) -> None:
        if input == "-":
            self._run(sys.stdin)
        else:
            with open(input, encoding="utf-8") as f:
                self._run(f)

    def _run(self, lines: IO[str]) -> None:
        for line in lines:
            if not line.strip():
                continue
            # One line out per line in, written as it goes, so a pipe sees each answer at once.
            self.stdout.write(json.dumps(route_line(line), ensure_ascii=False))
            self.stdout.flush()
