"""Chat benchmark against the demo model server, through the HTTP API and SSE.

    bash bench/chat.sh     # starts PostgreSQL, Redis, the demo server, a worker and the web server

Prints:
1. the latency Panels adds to the first token (send -> queue -> worker -> Redis
   stream -> SSE), p50/p95 over sequential sends, minus the demo server's own
   first-token time measured directly with the openai SDK; and the same for the
   whole 20-token reply;
2. sustained replies per second with a zero-delay model at N concurrent users;
3. how many concurrent 5-second streaming replies one worker process holds, and
   its memory (RSS) while it does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Panels:
    def __init__(self, base: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
            limits=httpx.Limits(max_connections=2000),
        )

    def conversation(self) -> int:
        response = self.http.post("/api/v1/conversations", json={"title": "bench"})
        response.raise_for_status()
        return response.json()["id"]

    def send(self, conversation: int, content: str, model: str = "demo") -> int:
        response = self.http.post(
            f"/api/v1/conversations/{conversation}/messages", json={"content": content, "model": model}
        )
        if response.status_code != 202:
            raise RuntimeError(f"send answered {response.status_code}: {response.text[:200]}")
        return response.json()["id"]

    def events(self, message: int) -> Iterator[tuple[str, str]]:
        with self.http.stream(
            "GET", f"/api/v1/messages/{message}/stream", headers={"Accept": "text/event-stream"}
        ) as r:
            kind = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    yield kind, line[6:]
                    if kind in ("done", "error"):
                        return


def direct_latency(demo_url: str, prompt: str, runs: int) -> tuple[list[float], list[float]]:
    client = openai.OpenAI(base_url=demo_url, api_key="demo", max_retries=0)
    first, whole = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        stream = client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=512,
        )
        got_first = False
        for chunk in stream:
            if not got_first and chunk.choices and chunk.choices[0].delta.content:
                first.append(time.perf_counter() - t0)
                got_first = True
        whole.append(time.perf_counter() - t0)
    return first, whole


def panels_latency(panels: Panels, prompt: str, runs: int) -> tuple[list[float], list[float]]:
    conversation = panels.conversation()
    first, whole = [], []
    accepted = panels.accepted = []
    for i in range(runs):
        if i % 20 == 0:
            conversation = panels.conversation()  # keep the context short
        t0 = time.perf_counter()
        message = panels.send(conversation, prompt)
        accepted.append(time.perf_counter() - t0)
        got_first = False
        for kind, _ in panels.events(message):
            if kind == "delta" and not got_first:
                first.append(time.perf_counter() - t0)
                got_first = True
            if kind == "error":
                raise RuntimeError("a reply failed")
        whole.append(time.perf_counter() - t0)
    return first, whole


def sustained(panels: Panels, prompt: str, users: int, seconds: float) -> tuple[float, int]:
    done = [0]
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def user() -> None:
        conversation = panels.conversation()
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            if n % 20 == 0:
                conversation = panels.conversation()
            try:
                message = panels.send(conversation, prompt)
                final = [kind for kind, _ in panels.events(message) if kind in ("done", "error")]
                ok = final == ["done"]
            except Exception:
                ok = False
            with lock:
                done[0] += ok
                errors[0] += not ok

    t0 = time.perf_counter()
    threads = [threading.Thread(target=user) for _ in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.perf_counter() - t0), errors[0]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def concurrent_streams(panels: Panels, count: int, worker_pid: int) -> dict:
    """How many 5-second replies one worker process streams at once, and its memory.

    The running worker is stopped, `count` replies are queued through the API, then
    one new worker process with enough threads takes them all at once.
    """
    import os
    import signal
    import subprocess
    import sys

    os.kill(worker_pid, signal.SIGTERM)
    while Path(f"/proc/{worker_pid}").exists() and "zombie" not in Path(f"/proc/{worker_pid}/status").read_text():
        time.sleep(0.2)
    conversations = [panels.conversation() for _ in range(max(1, count // 20))]
    prompt = "[demo:tokens=50] [demo:tps=10] hold this stream"
    ids: list[int] = []
    lock = threading.Lock()
    next_index = iter(range(count))

    def sender() -> None:
        for i in next_index:
            message = panels.send(conversations[i % len(conversations)], prompt)
            with lock:
                ids.append(message)

    senders = [threading.Thread(target=sender) for _ in range(16)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    celery = str(Path(sys.executable).with_name("celery"))
    worker = subprocess.Popen(
        [
            celery,
            "-A",
            "panels",
            "worker",
            "-P",
            "threads",
            "-c",
            str(count + 50),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    t0 = time.perf_counter()
    peak_streaming = 0
    peak_rss = 0.0
    finished = 0
    try:
        while time.perf_counter() - t0 < 300:
            peak_streaming = max(peak_streaming, _streaming_count())
            peak_rss = max(peak_rss, rss_mb(worker.pid))
            finished = _finished_count(ids)
            if finished >= len(ids):
                break
            time.sleep(0.25)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    return {
        "sent": len(ids),
        "peak_streaming": peak_streaming,
        "peak_rss_mb": peak_rss,
        "finished": finished,
        "drained_s": time.perf_counter() - t0,
    }


def queue_wait_ms() -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)) "
            "FROM chat_message WHERE started_at IS NOT NULL"
        )
        return float(cursor.fetchone()[0] or 0) * 1000


def _streaming_count() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM chat_message WHERE status = 'streaming'")
        return cursor.fetchone()[0]


def _finished_count(ids: list[int]) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM chat_message WHERE id = ANY(%s) AND status IN ('done','failed','cancelled')", [ids]
        )
        return cursor.fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--demo", default="http://127.0.0.1:8100/v1")
    parser.add_argument("--key", required=True)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--worker-pid", type=int, required=True)
    parser.add_argument("--skip", default="", help="comma-separated: latency,sustained,streams")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    panels = Panels(args.base, args.key)
    prompt = "[demo:tokens=20] benchmark"
    results: dict = {}

    if "latency" not in skip:
        panels_latency(panels, prompt, 10)  # warm up connections and caches
        d_first, d_whole = direct_latency(args.demo, prompt, args.runs)
        p_first, p_whole = panels_latency(panels, prompt, args.runs)
        for name, panel, direct in (("first token", p_first, d_first), ("whole reply", p_whole, d_whole)):
            added50 = (statistics.median(panel) - statistics.median(direct)) * 1000
            added95 = (percentile(panel, 0.95) - percentile(direct, 0.95)) * 1000
            p50, p95 = statistics.median(panel) * 1000, percentile(panel, 0.95) * 1000
            d50, d95 = statistics.median(direct) * 1000, percentile(direct, 0.95) * 1000
            print(
                f"{name}: Panels p50 {p50:.1f} ms p95 {p95:.1f} ms; direct p50 {d50:.1f} ms p95 {d95:.1f} ms; "
                f"added p50 {added50:.1f} ms p95 {added95:.1f} ms",
                flush=True,
            )
            results[name] = {"added_p50_ms": added50, "added_p95_ms": added95}
        print(f"  of which the send (POST -> 202): p50 {statistics.median(panels.accepted) * 1000:.1f} ms", flush=True)
        print(f"  of which the queue (stored -> claimed by the worker): p50 {queue_wait_ms():.1f} ms", flush=True)
    if "sustained" not in skip:
        rate, errors = sustained(panels, prompt, args.users, args.seconds)
        print(
            f"sustained: {rate:.1f} replies/s at {args.users} concurrent users "
            f"for {args.seconds:.0f} s, {errors} errors",
            flush=True,
        )
        results["sustained"] = {"replies_per_s": rate, "errors": errors}
    if "streams" not in skip:
        out = concurrent_streams(panels, args.streams, args.worker_pid)
        print(
            f"concurrent 5-second replies: {out['sent']} queued, peak {out['peak_streaming']} streaming at once "
            f"in one worker process, peak RSS {out['peak_rss_mb']:.0f} MB, {out['finished']} finished "
            f"in {out['drained_s']:.1f} s",
            flush=True,
        )
        results["streams"] = out
    print(json.dumps(results))


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panels.settings")
    import django

    django.setup()
    main()
