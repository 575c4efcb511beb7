"""Real processes for the fault and load tests, each started and stopped by the test.

- `pg`: a PostgreSQL cluster of these tests' own (session), so one test can restart it;
  a migrated template database makes each test's fresh database a quick copy.
- `demo_model`: the demo model server as a subprocess (session).
- `redis`: a Redis of the test's own on a free port (function), so it can be stopped.
- `stack`: a fresh database plus the web and worker processes the test starts; every
  process is stopped when the test ends, also on failure.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import urllib3

from tests.e2e_servers import Event, parse_events

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
# Variables of the suite's environment that must not leak into the processes started here.
_SCRUB = (
    "DATABASE_URL",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "MISTRAL_API_KEY",
    "PANELS_ENV",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def report(name: str, **figures: Any) -> None:
    """One line of figures per test, for the README (run pytest with -s to see it live)."""
    text = ", ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[reliability] {name}: {text}", flush=True)
    log = os.environ.get("RELIABILITY_FIGURES")
    if log:
        with open(log, "a") as out:
            out.write(json.dumps({"test": name, **figures}) + "\n")


# --- processes ----------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive:
            # Each process leads its own group (start_new_session): its children go too.
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class Processes:
    """Every process a test starts, stopped in reverse order at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log_path = self.log_dir / f"{name}-{len(self.procs)}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name=name, popen=popen, log_path=log_path)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop(timeout=8)
            except Exception:  # keep stopping the others
                pass


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(DJANGO_SETTINGS_MODULE="panels.settings", PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING")
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --- Redis --------------------------------------------------------------------------


class RedisServer:
    """A Redis configured as in production (AOF on, noeviction), on a free port."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid_file(self) -> Path:
        return self.dir / "redis.pid"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--maxmemory-policy", "noeviction",
                "--daemonize", "yes",
                "--pidfile", str(self.pid_file),
                "--logfile", str(self.dir / "redis.log"),
            ],
            check=True,
        )  # fmt: skip
        wait_for(lambda: port_open(self.port), timeout=10, what="Redis to listen")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): Redis writes its AOF and exits; clients get refused."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        wait_for(lambda: not _pid_alive(pid), timeout=15, what="Redis to stop")

    def cli(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- PostgreSQL ---------------------------------------------------------------------


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found:
        pytest.skip("PostgreSQL is not installed")
    return found[-1]


class PgCluster:
    """A throwaway cluster (trust auth, loopback), run as the postgres user when we are root."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        # Not under pytest's tmp dir: the postgres user must be able to reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="panels-reliability-pg-"))
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.data = self.dir / "data"

    def _run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        return subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, check=check, timeout=timeout, cwd=self.dir
        )

    def init(self) -> None:
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        # fast: every connection is cut, as when the server restarts for an upgrade or failover.
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str, template: str | None = None) -> str:
        self.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)


def manage(database_url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180):
    return subprocess.run(
        [PY, "manage.py", *args],
        cwd=ROOT,
        env={**base_env(DATABASE_URL=database_url), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def seed(database_url: str, *args: str) -> list[dict]:
    done = subprocess.run(
        [PY, "-m", "tests.reliability.seed", *args],
        cwd=ROOT,
        env=base_env(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def audit(database_url: str) -> subprocess.CompletedProcess:
    """`manage.py wallet audit` against the database, as an operator would run it."""
    return manage(database_url, "wallet", "audit")


def sql(database_url: str, query: str, params: Iterable[Any] = ()) -> list[tuple]:
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query, tuple(params)).fetchall()


TEMPLATE_DB = "panels_template"


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Iterator[str]:
    """The demo model server (chat/demo_server.py) as a process; yields its base URL."""
    procs = Processes(tmp_path_factory.mktemp("demo"))
    port = free_port()
    proc = procs.spawn(
        "demo", [PY, "-m", "chat.demo_server", "--host", "127.0.0.1", "--port", str(port), "--quiet"], base_env()
    )
    try:
        wait_for(lambda: port_open(port) or not proc.alive, timeout=20, what="the demo model server")
        assert proc.alive, proc.log_tail()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        procs.stop_all()


@pytest.fixture(scope="session")
def pg(demo_model) -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.init()
        url = cluster.create_database(TEMPLATE_DB)
        env = {"DEMO_MODEL_URL": demo_model}
        for args in (("migrate", "--no-input", "-v0"), ("createcachetable",), ("load_catalog",)):
            done = manage(url, *args, env=env)
            assert done.returncode == 0, done.stderr[-3000:]
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Web:
    url: str
    proc: Proc


@dataclass
class Stack:
    """A fresh database on `pg`, a Redis, the demo model, and the processes started on them."""

    database_url: str
    redis: RedisServer
    demo_url: str
    procs: Processes
    env: dict[str, str] = field(default_factory=dict)
    workers: list[Proc] = field(default_factory=list)

    def child_env(self, **extra: Any) -> dict[str, str]:
        return base_env(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis.url,
            CELERY_BROKER_URL=self.redis.url,
            DEMO_MODEL_URL=self.demo_url,
            DEBUG="0",
            RATE_SEND="100000/min",
            RATE_TOPUP="100000/min",
            **{**self.env, **extra},
        )

    def start_worker(
        self, *, concurrency: int = 20, wait: bool = True, loglevel: str = "WARNING", **extra: Any
    ) -> Proc:
        name = f"w{uuid.uuid4().hex[:6]}"
        proc = self.procs.spawn(
            "worker",
            [
                PY, "-m", "celery", "-A", "panels", "worker", "-P", "threads", "-c", str(concurrency),
                "--without-gossip", "--without-mingle",  # as scripts/run.sh and docs/operations.md
                "-n", f"{name}@localhost", "--loglevel", loglevel,
            ],
            # The worker logs through the project's logging config, at LOG_LEVEL.
            self.child_env(**{"LOG_LEVEL": loglevel, **extra}),
        )  # fmt: skip
        self.workers.append(proc)
        if wait:
            key = f"panels:worker:{name}@localhost"
            wait_for(
                lambda: not proc.alive or self.redis.cli("exists", key) == "1",
                timeout=60,
                what="the worker to report in",
            )
            assert proc.alive, proc.log_tail()
        return proc

    def start_web(self, *, server: str = "runserver", **extra: Any) -> Web:
        """A web process: Django's runserver (WSGI) or uvicorn (ASGI, as scripts/run.sh and
        production start it)."""
        port = free_port()
        if server == "uvicorn":
            argv = [
                PY, "-m", "uvicorn", "panels.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning", "--no-access-log",
            ]  # fmt: skip
        else:
            argv = [PY, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        proc = self.procs.spawn("web", argv, self.child_env(**extra))
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if not proc.alive:
                return True
            try:
                requests.get(f"{url}/healthz", timeout=2)
            except requests.RequestException:
                return False
            return True

        wait_for(up, timeout=60, what="the web process to answer", every=0.2)
        assert proc.alive, proc.log_tail()
        return Web(url=url, proc=proc)

    def sql(self, query: str, params: Iterable[Any] = ()) -> list[tuple]:
        return sql(self.database_url, query, params)

    def audit(self) -> subprocess.CompletedProcess:
        return audit(self.database_url)

    def seed_users(self, count: int, credits: int = 20_000_000, prefix: str = "user") -> list[dict]:
        return seed(self.database_url, "users", "--count", str(count), "--credits", str(credits), "--prefix", prefix)

    def unfinished(self) -> int:
        return self.sql("SELECT count(*) FROM chat_message WHERE status IN ('queued', 'streaming')")[0][0]

    def pending_holds(self) -> int:
        return self.sql("SELECT count(*) FROM wallet_hold WHERE status = 'pending'")[0][0]

    def wait_drained(self, timeout: float) -> float:
        """Seconds until no reply is queued or streaming (fails the test past `timeout`)."""
        started = time.monotonic()
        wait_for(lambda: self.unfinished() == 0, timeout=timeout, what="every reply to end", every=0.5)
        return time.monotonic() - started

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path.name})\n{p.log_tail()}" for p in self.procs.procs)


@pytest.fixture
def stack(pg, redis, demo_model, tmp_path) -> Iterator[Stack]:
    name = f"rel_{uuid.uuid4().hex[:10]}"
    database_url = pg.create_database(name, template=TEMPLATE_DB)
    procs = Processes(tmp_path)
    the_stack = Stack(database_url=database_url, redis=redis, demo_url=demo_model, procs=procs)
    try:
        yield the_stack
    finally:
        procs.stop_all()
        try:
            pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass


# --- the HTTP API as a user sees it ----------------------------------------------------


# How a dropped connection shows up while reading a body.
BROKEN = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError)


def chunks_of(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: runserver's stream has no chunked framing, and
    `iter_content(None)` would then wait for the whole body."""
    while True:
        chunk = response.raw.read1(65536)
        if not chunk:
            return
        yield chunk


class User:
    """One simulated person: an API key (or a browser session) against one web process."""

    def __init__(self, info: dict, base_url: str, *, session_auth: bool = False) -> None:
        self.info = info
        self.base = base_url
        self.http = requests.Session()
        if session_auth:
            csrf = uuid.uuid4().hex  # 32 characters: Django's CSRF secret length
            self.http.cookies.set("sessionid", info["session"], domain="127.0.0.1")
            self.http.cookies.set("csrftoken", csrf, domain="127.0.0.1")
            self.http.headers.update({"X-CSRFToken": csrf, "Referer": base_url + "/"})
        else:
            self.http.headers["Authorization"] = f"Bearer {info['api_key']}"

    def post(self, path: str, payload: dict | None = None, timeout: float = 30) -> requests.Response:
        return self.http.post(self.base + path, json=payload or {}, timeout=timeout)

    def get(self, path: str, timeout: float = 30) -> requests.Response:
        return self.http.get(self.base + path, timeout=timeout)

    def conversation(self) -> int:
        response = self.post("/api/v1/conversations", {"title": "reliability"})
        assert response.status_code == 201, response.text[:500]
        return response.json()["id"]

    def send(self, conversation: int, content: str, model: str = "demo", timeout: float = 30) -> requests.Response:
        return self.post(
            f"/api/v1/conversations/{conversation}/messages", {"content": content, "model": model}, timeout=timeout
        )

    def message(self, message_id: int) -> dict:
        response = self.get(f"/api/v1/messages/{message_id}")
        assert response.status_code == 200, response.text[:500]
        return response.json()

    def stream(self, message_id: int, last_event_id: str | None = None, timeout: float = 25) -> requests.Response:
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        return self.http.get(
            f"{self.base}/api/v1/messages/{message_id}/stream", headers=headers, stream=True, timeout=(5, timeout)
        )

    def read_reply(self, message_id: int, *, timeout: float = 25) -> list[Event]:
        """The reply's events up to done/error (fewer if the connection broke)."""
        seen: list[Event] = []
        try:
            with self.stream(message_id, timeout=timeout) as response:
                if response.status_code != 200:
                    return seen
                for event in parse_events(chunks_of(response)):
                    seen.append(event)
                    if event.kind in ("done", "error"):
                        break
        except BROKEN:
            pass
        return seen


def is_clean_error(response: requests.Response) -> bool:
    """A JSON error in the API's shape: {"error": {"code", "message"}}, never an HTML page."""
    if not response.headers.get("Content-Type", "").startswith("application/json"):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and bool(error.get("code")) and bool(error.get("message"))


@dataclass
class Followed:
    events: list[Event] = field(default_factory=list)
    reconnects: int = 0
    broken: int = 0  # connections that ended or failed before the terminal event

    @property
    def text(self) -> str:
        return "".join(e.data.get("text", "") for e in self.events if e.kind == "delta")

    @property
    def terminal(self) -> Event | None:
        return self.events[-1] if self.events and self.events[-1].kind in ("done", "error") else None


def follow_reply(user: User, message_id: int, *, deadline: float, retry_after: float = 1.0) -> Followed:
    """Read a reply as a browser does: on a dropped stream, reconnect with Last-Event-ID."""
    out = Followed()
    while time.monotonic() < deadline:
        last = out.events[-1].id if out.events else None
        try:
            with user.stream(message_id, last_event_id=last, timeout=20) as response:
                if response.status_code == 200:
                    for event in parse_events(chunks_of(response)):
                        out.events.append(event)
                        if event.kind in ("done", "error"):
                            return out
        except BROKEN:
            pass
        out.broken += 1
        out.reconnects += 1
        time.sleep(retry_after)
    return out
