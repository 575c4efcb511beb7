"""`manage.py route_train FILE`: retrain the router on an operator's labelled file and report held-out figures."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from chat.route_model import RouterWeights
from chat.route_training import split_of
from chat.router import route_decide

DATA = Path(__file__).parent / "data" / "route" / "labelled.jsonl"


@pytest.fixture
def operator_file(tmp_path) -> Path:
    """An operator's own file: 300 of Panels' prompts, without ids or splits (the split rule applies)."""
    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")][::6][:300]
    path = tmp_path / "mine.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": r["prompt"], "tier": r["tier"], "category": r["category"]}) + "\n" for r in rows),
        encoding="utf-8",
    )
    return path


def test_it_trains_reports_and_writes_weights_the_router_can_use(db, operator_file, tmp_path):
    out = tmp_path / "weights.npz"
    stdout = io.StringIO()
    call_command("route_train", str(operator_file), "--out", str(out), "--json", stdout=stdout)
    figures = json.loads(stdout.getvalue())
    assert figures["rows"] == 300 and figures["weights"] == str(out)
    for split in ("validation", "test"):
        report = figures[split]
        for name in ("agreement", "flagship_recall", "saving_80_20"):
            interval = report[name]
            assert 0.0 <= interval["low"] <= interval["value"] <= interval["high"] <= 1.0
    # The split rule held the test part out of training: its prompts are the ones hashed to "test".
    prompts = [json.loads(line)["prompt"] for line in operator_file.open(encoding="utf-8")]
    assert figures["test"]["n"] == sum(split_of(p) == "test" for p in prompts)
    weights = RouterWeights.load(out)
    assert "trained on" in weights.meta
    decision = route_decide(content="What's the capital of Chile?", weights=weights)
    assert decision.tier == "cheap" and decision.category


def test_the_text_report_names_each_figure_with_its_interval(db, operator_file, tmp_path):
    stdout = io.StringIO()
    call_command("route_train", str(operator_file), "--dry-run", stdout=stdout)
    text = stdout.getvalue()
    assert "test (held out):" in text and "weights not written (--dry-run)" in text
    for label in ("agreement with the labels:", "flagship recall:", "saving vs flagship-only on the 80/20 mix:"):
        assert label in text
    assert text.count("[") >= 8  # each figure with its 95% interval


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"prompt": "hi", "tier": "medium"}), '"tier" must be'),
        (json.dumps({"tier": "cheap"}), "expected"),
        (json.dumps({"prompt": "hi", "tier": "cheap", "split": "dev"}), '"split" must be'),
    ],
)
def test_a_bad_file_is_refused_with_its_line(db, tmp_path, line, fragment):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(CommandError, match=fragment):
        call_command("route_train", str(path), "--dry-run")


def test_too_few_prompts_of_a_tier_is_refused(db, tmp_path):
    path = tmp_path / "small.jsonl"
    path.write_text(json.dumps({"prompt": "hello", "tier": "cheap"}) + "\n", encoding="utf-8")
    with pytest.raises(CommandError, match="at least 10 are needed"):
        call_command("route_train", str(path), "--dry-run")
