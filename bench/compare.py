"""Side-by-side benchmark, one machine, one run, rounds interleaved so drift hits all alike:

- direct:  the demo model server, called directly (the baseline);
- litellm: the LiteLLM proxy in front of the same demo server;
- chat:    Panels' chat path (POST a message -> worker -> Redis -> SSE), ledger included;
- v1:      Panels' OpenAI-compatible /v1/chat/completions, ledger included.

    bash bench/compare.sh      # starts everything; arguments go to this script

Prints, for each target, the latency it adds to the first token (p50/p95) and to the
whole 20-token reply over the direct call, and sustained streamed replies/s at N
concurrent users (each with a client of its own and, for Panels, an account and API key of
its own from `--keys-file`: a user's sends take turns on that user's row); with
`--procs name=pid,...`, the CPU each process (with its children:
PostgreSQL's backends) spent per reply in each target's sustained phase, from
/proc/<pid>/stat. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx2 as httpx

PROMPT = "[demo:tokens=20] benchmark"
TARGETS = ("direct", "litellm", "chat", "v1")


TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU ticks of the process and of the children it has reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    # After the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based from state.
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def cpu_ms(roots: dict[str, int]) -> dict[str, float]:
    """CPU milliseconds so far of each named process and its descendants."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            stats[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    for name, root in roots.items():
        total, todo = 0, [root]
        while todo:
            pid = todo.pop()
            total += stats.get(pid, (0, 0))[1]
            todo.extend(children.get(pid, ()))
        out[name] = total * TICK_MS
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class OpenAIShaped:
    """One streamed chat completion over raw HTTP: the same client code for every
    OpenAI-shaped target, so the client's own cost is the same for each."""

    def __init__(self, base: str, key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60,
            limits=httpx.Limits(max_connections=500, max_keepalive_connections=500),
        )  # fmt: skip

    async def reply(self) -> tuple[float, float]:
        body = {
            "model": "demo",
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 512,
        }
        t0 = time.perf_counter()
        first = None
        async with self.http.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {(await response.aread())[:200]!r}")
            async for line in response.aiter_lines():
                if first is None and line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                        first = time.perf_counter() - t0
                if line == "data: [DONE]":
                    break
        if first is None:
            raise RuntimeError("no text in the reply")
        return first, time.perf_counter() - t0


class ChatPath:
    """Panels' own API: send a message (202), then read its reply as server-sent events."""

    def __init__(self, base: str, key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60,
            limits=httpx.Limits(max_connections=500, max_keepalive_connections=500),
        )  # fmt: skip
        self.conversations: list[int] = []
        self.sent = 0

    async def conversation(self) -> int:
        # A fresh conversation every 20 sends keeps the context (and the hold) short.
        if not self.conversations or self.sent % 20 == 0:
            response = await self.http.post("/api/v1/conversations", json={"title": "bench"})
            response.raise_for_status()
            self.conversations.append(response.json()["id"])
        self.sent += 1
        return self.conversations[-1]

    async def reply(self) -> tuple[float, float]:
        conversation = await self.conversation()
        t0 = time.perf_counter()
        sent = await self.http.post(
            f"/api/v1/conversations/{conversation}/messages", json={"content": PROMPT, "model": "demo"}
        )
        if sent.status_code != 202:
            raise RuntimeError(f"send answered {sent.status_code}: {sent.text[:200]}")
        message = sent.json()["id"]
        first = None
        kind = ""
        async with self.http.stream(
            "GET", f"/api/v1/messages/{message}/stream", headers={"Accept": "text/event-stream"}
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    if kind == "delta" and first is None:
                        first = time.perf_counter() - t0
                    if kind == "error":
                        raise RuntimeError(f"reply failed: {line}")
                    if kind == "done":
                        break
        if first is None:
            raise RuntimeError("no text in the reply")
        return first, time.perf_counter() - t0


async def latency(clients: dict[str, Callable[[], Awaitable[tuple[float, float]]]], runs: int) -> dict:
    first: dict[str, list[float]] = {name: [] for name in clients}
    whole: dict[str, list[float]] = {name: [] for name in clients}
    names = list(clients)
    for i in range(runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate the order each round
            f, w = await clients[name]()
            first[name].append(f)
            whole[name].append(w)
    return {"first": first, "whole": whole}


Reply = Callable[[], Awaitable[tuple[float, float]]]


async def sustained(replies: list[Reply], seconds: float) -> tuple[int, int, float]:
    deadline = time.perf_counter() + seconds
    done = errors = 0

    async def user(reply: Reply) -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            try:
                await reply()
                done += 1
            except Exception:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(user(reply) for reply in replies))
    return done, errors, time.perf_counter() - t0


async def run(args: argparse.Namespace) -> dict:
    targets = args.targets
    every = {
        "direct": lambda key: OpenAIShaped(args.demo, "demo").reply,
        "litellm": lambda key: OpenAIShaped(args.litellm, args.litellm_key).reply,
        "chat": lambda key: ChatPath(args.panels, key).reply,
        "v1": lambda key: OpenAIShaped(f"{args.panels}/v1", key).reply,
    }
    keys = args.keys or [args.key]
    # Every target alike: a client per user (the connection a user's browser or SDK keeps).
    users = {name: [every[name](keys[i % len(keys)]) for i in range(args.users)] for name in targets}
    clients = {name: replies[0] for name, replies in users.items()}
    await latency(clients, 5)  # warm up connections, caches and pools
    for name in targets:  # and every user's own client (and, for chat, its first conversation)
        await asyncio.gather(*(reply() for reply in users[name]))
    lat = await latency(clients, args.runs)
    results: dict = {"runs": args.runs, "users": args.users, "accounts": len(keys), "targets_run": list(targets)}
    base_first, base_whole = lat["first"]["direct"], lat["whole"]["direct"]
    for name in targets:
        f, w = lat["first"][name], lat["whole"][name]
        results[name] = {
            "first_p50_ms": statistics.median(f) * 1000,
            "first_p95_ms": percentile(f, 0.95) * 1000,
            "added_first_p50_ms": (statistics.median(f) - statistics.median(base_first)) * 1000,
            "added_first_p95_ms": (percentile(f, 0.95) - percentile(base_first, 0.95)) * 1000,
            "added_whole_p50_ms": (statistics.median(w) - statistics.median(base_whole)) * 1000,
            "added_whole_p95_ms": (percentile(w, 0.95) - percentile(base_whole, 0.95)) * 1000,
        }
    totals = {name: [0, 0, 0.0] for name in targets}
    roots = dict(args.procs, client=os.getpid())
    cpu = {name: dict.fromkeys(roots, 0.0) for name in targets}
    for r in range(args.rounds):
        order = list(targets[r % len(targets) :] + targets[: r % len(targets)])
        for name in order:
            before = cpu_ms(roots)
            done, errors, took = await sustained(users[name], args.seconds)
            after = cpu_ms(roots)
            for proc in roots:
                cpu[name][proc] += after[proc] - before[proc]
            totals[name][0] += done
            totals[name][1] += errors
            totals[name][2] += took
            print(f"  round {r + 1}, {name}: {done / took:.1f} replies/s, {errors} errors", flush=True)
    for name, (done, errors, took) in totals.items():
        results[name]["replies_per_s"] = done / took
        results[name]["errors"] = errors
        if args.procs:
            results[name]["cpu_ms_per_reply"] = {proc: ms / max(done, 1) for proc, ms in cpu[name].items()}
    return results


def report(results: dict) -> None:
    targets = results["targets_run"]
    print(f"latency over {results['runs']} interleaved rounds (20-token replies); added = minus the direct call")
    for name in targets:
        r = results[name]
        line = f"{name:8s} first token p50 {r['first_p50_ms']:6.1f} ms p95 {r['first_p95_ms']:6.1f} ms"
        if name != "direct":
            line += (
                f" | added first token p50 {r['added_first_p50_ms']:+6.1f} ms p95 {r['added_first_p95_ms']:+6.1f} ms"
                f" | added whole reply p50 {r['added_whole_p50_ms']:+6.1f} ms p95 {r['added_whole_p95_ms']:+6.1f} ms"
            )
        print(line)
    users, accounts = results["users"], results["accounts"]
    print(f"sustained streamed replies/s at {users} concurrent users ({accounts} Panels accounts)")
    for name in targets:
        line = f"{name:8s} {results[name]['replies_per_s']:7.1f} replies/s ({results[name]['errors']} errors)"
        if "cpu_ms_per_reply" in results[name]:
            line += " | CPU ms per reply: " + " ".join(
                f"{proc} {ms:.2f}" for proc, ms in results[name]["cpu_ms_per_reply"].items()
            )
        print(line)
    lite = results.get("litellm")
    checks = {}
    for name in ("v1", "chat"):
        if lite is None or name not in results:
            continue
        mine = results[name]
        checks[f"{name}_first_p50_le_litellm"] = mine["added_first_p50_ms"] <= lite["added_first_p50_ms"]
        checks[f"{name}_first_p95_le_litellm"] = mine["added_first_p95_ms"] <= lite["added_first_p95_ms"]
        checks[f"{name}_rps_ge_2x_litellm"] = mine["replies_per_s"] >= 2 * lite["replies_per_s"]
    for name, ok in checks.items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    results["targets"] = checks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo", required=True, help="the demo server's /v1 URL")
    parser.add_argument("--litellm", required=True, help="the LiteLLM proxy's /v1 URL")
    parser.add_argument("--litellm-key", default="sk-bench")
    parser.add_argument("--panels", required=True, help="Panels' base URL")
    parser.add_argument("--key", help="a Panels API key, for every user")
    parser.add_argument("--keys-file", help="Panels API keys, one per line: one per user, in turn")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--machine", default="")
    parser.add_argument(
        "--targets",
        type=lambda v: tuple(t for t in TARGETS if t in v.split(",")),
        default=TARGETS,
        help="which to run, e.g. direct,litellm,v1 (direct, the baseline, always runs)",
    )
    parser.add_argument(
        "--procs",
        type=lambda v: {n: int(p) for n, _, p in (item.partition("=") for item in v.split(",") if item)},
        default={},
        help="name=pid,...: processes whose CPU per reply to report (children included)",
    )
    args = parser.parse_args()
    args.keys = Path(args.keys_file).read_text().split() if args.keys_file else []
    if not (args.keys or args.key):
        parser.error("give --key or --keys-file")
    if "direct" not in args.targets:
        args.targets = ("direct", *args.targets)
    results = asyncio.run(run(args))
    report(results)
    results["machine"] = args.machine
    results["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    print(json.dumps(results, separators=(",", ":")))


if __name__ == "__main__":
    main()
