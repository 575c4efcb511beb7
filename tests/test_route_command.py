"""`manage.py route`: JSON lines in, one JSON line out per prompt; nothing stored or charged."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from chat.models import Message
from chat.router import route_decide
from chat.routing import ROUTE_MAX_CHARS
from wallet.models import Entry, Hold

KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY")
TRACE = (
    "Why does this fail?\n\nTraceback (most recent call last):\n"
    '  File "app/jobs.py", line 41, in run\n    total = sum(row["amount"] for row in rows)\n'
    "KeyError: 'amount'\n"
)


def run_route(monkeypatch, text: str) -> tuple[list[dict], str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    out, err = io.StringIO(), io.StringIO()
    call_command("route", stdout=out, stderr=err)
    return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


@pytest.fixture
def keys(monkeypatch):
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")


def test_one_line_out_per_prompt_with_tier_model_and_reason(db, keys, monkeypatch):
    lines = [
        json.dumps({"prompt": 'Label the sentiment of this review: "Arrived fast, works great."'}),
        json.dumps({"prompt": TRACE}),
    ]
    out, err = run_route(monkeypatch, "\n".join(lines) + "\n")
    review = route_decide(content=json.loads(lines[0])["prompt"])
    assert review.reason.startswith("classification or tagging (flagship likelihood ")
    assert out == [
        {"tier": "cheap", "model": "gpt-4o-mini", "reason": f"Auto -> GPT-4o mini: {review.reason}"},
        {"tier": "flagship", "model": "gpt-4o", "reason": f"Auto -> GPT-4o: {route_decide(content=TRACE).reason}"},
    ]
    assert err == ""


def test_a_bad_line_gets_an_error_line_and_the_rest_go_on(db, keys, monkeypatch):
    text = "\n".join(
        [
            "{not json",
            json.dumps(["a list"]),
            json.dumps({"text": "no prompt key"}),
            json.dumps({"prompt": 42}),
            json.dumps({"prompt": "   "}),
            json.dumps({"prompt": "x" * (ROUTE_MAX_CHARS + 1)}),
            "",  # blank lines are skipped, not answered
            json.dumps({"prompt": "Translate 'good morning' into Spanish."}),
        ]
    )
    out, _ = run_route(monkeypatch, text)
    assert len(out) == 7
    assert [set(o) for o in out[:6]] == [{"error"}] * 6
    assert out[0]["error"].startswith("not JSON")
    assert '"prompt"' in out[2]["error"] and "must be a string" in out[3]["error"]
    assert "empty" in out[4]["error"] and "512,000" in out[5]["error"]
    assert out[6]["tier"] == "cheap" and out[6]["model"] == "gpt-4o-mini"


def test_with_no_keys_the_demo_model_answers_and_the_reason_says_so(db, monkeypatch):
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    out, _ = run_route(monkeypatch, json.dumps({"prompt": TRACE}) + "\n")
    assert out[0]["tier"] == "flagship" and out[0]["model"] == "demo"
    assert out[0]["reason"] == (
        f"Auto -> Demo model: {route_decide(content=TRACE).reason} (no provider key is set, so the demo model answers)"
    )
    assert out[0]["reason"].startswith("Auto -> Demo model: stack trace or crash dump (flagship likelihood ")


def test_nothing_is_stored_or_charged(db, keys, monkeypatch):
    run_route(monkeypatch, json.dumps({"prompt": TRACE}) + "\n")
    assert Message.objects.count() == 0
    assert Entry.objects.count() == 0 and Hold.objects.count() == 0


def test_it_reads_a_file_too(db, keys, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "Write a subject line for our spring sale"}) + "\n", encoding="utf-8")
    out = io.StringIO()
    call_command("route", "--input", str(path), stdout=out)
    assert json.loads(out.getvalue())["model"] == "gpt-4o-mini"
