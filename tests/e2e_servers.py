"""Real servers for chat tests: the demo model server in a thread, a Celery worker in a
subprocess, and helpers to read a reply's server-sent events.

Import the fixtures into a test module (`from tests.e2e_servers import demo_server, ...`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.conftest import REDIS_URL, test_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_server() -> Iterator:
    from chat.demo_server import serve_in_thread

    handle = serve_in_thread()
    yield handle
    handle.stop()


@pytest.fixture
def chat_catalog(db, demo_server):
    """The default catalog with the demo model pointed at the test's demo server.

    Loaded per test: a transactional test's teardown empties every table.
    """
    from chat.models import ModelSpec

    call_command("load_catalog", verbosity=0)
    ModelSpec.objects.filter(slug="demo").update(base_url=f"http://127.0.0.1:{demo_server.port}/v1")
    return ModelSpec.objects.get(slug="demo")


@dataclass
class Worker:
    queue: str
    hostname: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _wait_for_worker(worker: Worker, timeout: float = 120.0) -> None:
    from panels.heartbeat import worker_key
    from panels.redis_client import get_redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"the Celery worker exited at start:\n{worker.log_tail()}")
        if get_redis().exists(worker_key(worker.hostname)):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the Celery worker did not report in within {timeout:.0f} s:\n{worker.log_tail()}")


def start_worker(
    *, database_url: str, log_dir: Path, queue: str | None = None, env: dict[str, str] | None = None
) -> Worker:
    """A real worker (threads pool) on a queue of its own, sharing the test database and Redis.

    `env` adds or overrides environment variables (e.g. LOG_LEVEL=INFO to read its logs).
    """
    extra_env = env or {}
    queue = queue or f"test-chat-{uuid.uuid4().hex[:10]}"
    hostname = f"{queue}@localhost"
    log_path = log_dir / f"{queue}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "panels.settings",
        "MODEL_FIRST_TOKEN_RETRIES": "1",
        "MODEL_TIMEOUT_SECONDS": "10",
        "LOG_LEVEL": "WARNING",
        **extra_env,
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "panels",
        "worker",
        "-P",
        "threads",
        "-c",
        "20",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-Q",
        queue,
        "-n",
        hostname,
        "--loglevel",
        "WARNING",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = Worker(queue=queue, hostname=hostname, process=process, log_path=log_path)
    try:
        _wait_for_worker(worker)
    except BaseException:
        stop_worker(worker)
        raise
    return worker


def stop_worker(worker: Worker) -> None:
    process = worker.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.contextmanager
def tasks_routed_to(queue: str) -> Iterator[None]:
    """Send tasks published by this process to `queue` (each test worker has its own)."""
    from panels.celery import app as celery_app

    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    try:
        yield
    finally:
        celery_app.conf.task_default_queue = previous


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Worker]:
    with django_db_blocker.unblock():
        database_url = test_database_url()
    worker = start_worker(database_url=database_url, log_dir=tmp_path_factory.mktemp("worker"))
    try:
        with tasks_routed_to(worker.queue):
            yield worker
    finally:
        stop_worker(worker)


# --- server-sent events -------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    data: dict


def parse_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Events from a text/event-stream body, as they arrive (comments and `retry:` skipped)."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.decode().splitlines():
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            if "event" in fields:
                yield Event(id=fields.get("id", ""), kind=fields["event"], data=json.loads(fields.get("data") or "{}"))


def read_until_end(events: Iterable[Event]) -> list[Event]:
    seen = []
    for event in events:
        seen.append(event)
        if event.kind in ("done", "error"):
            break
    return seen


def text_of(events: Iterable[Event]) -> str:
    return "".join(e.data["text"] for e in events if e.kind == "delta")


# --- a web process ------------------------------------------------------------------


@dataclass
class Web:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_web(*, database_url: str, log_dir: Path, env: dict[str, str] | None = None) -> Web:
    """A real uvicorn process (ASGI, as in production) on the test database and Redis."""
    import socket

    import httpx2 as httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = log_dir / f"web-{port}.log"
    child_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "panels.settings",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "MODEL_TIMEOUT_SECONDS": "20",
        # Tests empty and refill the tables under a running process, which production never
        # does: its /v1 lookups (openai_api/cache.py) would outlive them. In-process tests cache.
        "API_CACHE_SECONDS": "0",
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "uvicorn", "panels.asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=BASE_DIR, env=child_env, stdout=log, stderr=subprocess.STDOUT)
    web = Web(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    # Start-up loads Auto's encoder: on a busy 2-core machine that can take a minute.
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the web process exited at start:\n{web.log_tail()}")
        try:
            httpx.get(f"{web.url}/healthz", timeout=2)
            return web
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                stop_web(web)
                raise RuntimeError(f"the web process did not answer within 180 s:\n{web.log_tail()}") from None
            time.sleep(0.1)


def stop_web(web: Web, *, kill: bool = False) -> None:
    process = web.process
    if process.poll() is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def live_web(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Web]:
    with django_db_blocker.unblock():
        database_url = test_database_url()
    web = start_web(database_url=database_url, log_dir=tmp_path_factory.mktemp("web"))
    try:
        yield web
    finally:
        stop_web(web)
