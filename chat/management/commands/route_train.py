"""Retrain Auto's learned router on a labelled file and report on its held-out part."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.route_metrics import RouterReport
from chat.route_prices import tier_prices
from chat.route_training import MIN_RECALL, LabelledDataError, load_labelled, train_on
from chat.router import weights_path


class Command(BaseCommand):
    help = (
        'Train the Auto router on FILE (JSON lines {"prompt", "tier": "cheap"|"flagship", "category", optional '
        '"id" and "split"}), print agreement, flagship recall and the saving on the 80/20 mix for the validation '
        "and test splits with 95%% intervals, and write the weights (AUTO_ROUTER_WEIGHTS unless --out). "
        "Restart the web processes to use them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Labelled prompts, JSON lines.")
        parser.add_argument("--out", default="", help="Where to write the weights (.npz).")
        parser.add_argument(
            "--min-recall",
            type=float,
            default=MIN_RECALL,
            help="The threshold is the highest whose validation flagship recall reaches this (default %(default)s).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Report only; write no weights.")
        parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")

    def handle(self, *args: object, **options: object) -> None:
        path = Path(str(options["file"]))
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        min_recall = float(options["min_recall"])  # type: ignore[arg-type]
        if not 0 < min_recall <= 1:
            raise CommandError("--min-recall must be in (0, 1]")
        try:
            rows = load_labelled(path)
        except LabelledDataError as exc:
            raise CommandError(f"{path}: {exc}") from None
        cheap, flagship = tier_prices()
        result = train_on(rows, cheap=cheap, flagship=flagship, min_recall=min_recall)
        out = Path(str(options["out"])) if options["out"] else weights_path()
        if not options["dry_run"]:
            result.weights.save(out)
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "rows": len(rows),
                        "l2": result.l2,
                        "threshold": round(result.weights.threshold, 4),
                        "validation": result.validation.as_dict(),
                        "test": result.test.as_dict() if result.test else None,
                        "weights": None if options["dry_run"] else str(out),
                    }
                )
            )
            return
        self.stdout.write(f"{len(rows)} labelled prompts; prices: {cheap.name} vs {flagship.name}")
        self.stdout.write(f"threshold P(flagship) >= {result.weights.threshold:.3f}, l2 = {result.l2}")
        self._section("validation (threshold chosen here)", result.validation)
        if result.test is not None:
            self._section("test (held out)", result.test)
        self.stdout.write("weights not written (--dry-run)" if options["dry_run"] else f"weights written to {out}")

    def _section(self, title: str, report: RouterReport) -> None:
        self.stdout.write(f"\n{title}:")
        for line in report.lines():
            self.stdout.write(f"  {line}")
