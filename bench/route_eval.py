"""Recompute the Auto router's published figures: the learned and the old rule router on the same held-out prompts.

Run: .venv/bin/python bench/route_eval.py [--weights PATH] [--threshold P]

Sets: the test split of tests/data/route/labelled.jsonl (split rule in
tests/data/route/README.md) and tests/data/route/heldout2.jsonl (written after
training). For each: agreement, flagship recall, cheap prompts kept cheap and
the saving against flagship-only on the 80/20 mix, with 95% intervals (Wilson;
the saving by a stratified bootstrap), at the catalog's tier prices. Then the
decision latency (p50/p95 over single calls, this machine) and the model's load
time in a fresh process. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panels.settings")

import django  # noqa: E402

django.setup()

from bench.rule_router import route_decide as rule_decide  # noqa: E402
from chat.route_metrics import RouterReport, evaluate  # noqa: E402
from chat.route_model import RouterWeights  # noqa: E402
from chat.route_prices import tier_prices  # noqa: E402
from chat.route_training import LabelledPrompt, load_labelled  # noqa: E402
from chat.router import route_decide, router_weights, weights_path  # noqa: E402

DATA = ROOT / "tests" / "data" / "route"
STARTUP = "import time; t = time.perf_counter(); from chat.router import warm; warm(); print(time.perf_counter() - t)"


def _report(rows: list[LabelledPrompt], predicted: list[str]) -> RouterReport:
    cheap, flagship = tier_prices()
    return evaluate(
        labels=[r.tier for r in rows],
        predicted=predicted,
        categories=[r.category for r in rows],
        cheap=cheap,
        flagship=flagship,
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="", help="Weights file (default: AUTO_ROUTER_WEIGHTS).")
    parser.add_argument("--threshold", type=float, default=None, help="P(flagship) threshold (default: trained).")
    parser.add_argument("--errors", action="store_true", help="Also list the learned router's errors.")
    args = parser.parse_args()
    weights: RouterWeights = router_weights(Path(args.weights) if args.weights else weights_path())
    threshold = weights.threshold if args.threshold is None else args.threshold

    sets = {
        "test": [r for r in load_labelled(DATA / "labelled.jsonl") if r.split == "test"],
        "heldout2": _load_heldout2(),
    }
    cheap, flagship = tier_prices()
    print(
        f"prices: {cheap.name} ${cheap.input_price}/${cheap.output_price}, "
        f"{flagship.name} ${flagship.input_price}/${flagship.output_price} per 1M tokens"
    )
    print(f"learned router: {weights.meta}; threshold {threshold:.3f}")
    result: dict = {"threshold": round(threshold, 4), "sets": {}}
    latencies: list[float] = []
    cpu: list[float] = []  # CPU time per decision: what it costs, whatever else the machine is running
    for name, rows in sets.items():
        learned, rule = [], []
        for row in rows:
            started, started_cpu = time.perf_counter(), time.thread_time()
            decision = route_decide(content=row.prompt, weights=weights, threshold=threshold)
            latencies.append((time.perf_counter() - started) * 1000)
            cpu.append((time.thread_time() - started_cpu) * 1000)
            learned.append(decision.tier)
            rule.append(rule_decide(content=row.prompt).tier)
            if args.errors and decision.tier != row.tier:
                print(f"  ERROR want {row.tier}: {decision.reason} [{row.category}] {row.prompt[:90]!r}")
        reports = {"learned": _report(rows, learned), "rule": _report(rows, rule)}
        result["sets"][name] = {k: v.as_dict() for k, v in reports.items()}
        for router, rep in reports.items():
            print(f"\n{name} set, {router} router:")
            for line in rep.lines():
                print(f"  {line}")
    startup = [float(subprocess.check_output([sys.executable, "-c", STARTUP], cwd=ROOT, text=True)) for _ in range(3)]
    result["latency_ms"] = {"p50": round(_percentile(latencies, 0.5), 2), "p95": round(_percentile(latencies, 0.95), 2)}
    result["cpu_ms"] = {"p50": round(_percentile(cpu, 0.5), 2), "p95": round(_percentile(cpu, 0.95), 2)}
    result["load_average"] = round(os.getloadavg()[0], 1)
    result["startup_s"] = round(min(startup), 2)
    print(
        f"\nCPU time per decision: p50 {result['cpu_ms']['p50']} ms, p95 {result['cpu_ms']['p95']} ms "
        f"(load average {result['load_average']} on {os.cpu_count()} CPUs)"
    )
    print(
        f"decision latency over {len(latencies)} calls: p50 {result['latency_ms']['p50']} ms, "
        f"p95 {result['latency_ms']['p95']} ms; model load in a fresh process: {startup} s"
    )
    print(json.dumps(result))


def _load_heldout2() -> list[LabelledPrompt]:
    rows = []
    with (DATA / "heldout2.jsonl").open(encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            rows.append(
                LabelledPrompt(item["id"], item["prompt"], item["tier"], item["category"], "heldout2", item["lang"])
            )
    return rows


if __name__ == "__main__":
    main()
