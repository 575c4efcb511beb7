"""/healthz: 200 only when the database, Redis and at least one worker answer; 503 names what failed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis
from django.test import override_settings

from panels import heartbeat
from tests.conftest import REDIS_URL

# A database index of the test Redis that no other test uses, so flushing it is safe.
HEALTH_DB = 13


def _redis_url(port: int, db: int = 0, host: str = "127.0.0.1") -> str:
    return f"redis://{host}:{port}/{db}"


def _test_redis_url() -> str:
    parts = urlsplit(REDIS_URL)
    return _redis_url(parts.port or 6379, HEALTH_DB, parts.hostname or "127.0.0.1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"redis-server did not open port {port}")


def _beat(url: str, hostname: str = "test-worker") -> None:
    redis.Redis.from_url(url).set(heartbeat.worker_key(hostname), str(time.time()), ex=heartbeat.HEARTBEAT_TTL)


@pytest.fixture
def health_redis(db) -> Iterator[str]:
    url = _test_redis_url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    with override_settings(REDIS_URL=url):
        yield url
    client.flushdb()


@pytest.fixture
def spare_redis() -> Iterator[tuple[int, Callable[[], subprocess.Popen]]]:
    """A second redis-server of our own that the test can kill (and start again on the same port)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="panels-health-redis-")
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--daemonize", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        _wait_for_port(port)
        return proc

    yield port, start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


def test_all_ok_with_redis_and_a_worker_heartbeat(client, health_redis):
    # The process's first request imports every view (seconds; on a loaded machine more
    # than the heartbeat's 20 s life): make it before the beat, not between beat and check.
    client.get("/healthz")
    _beat(health_redis)

    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "worker": "ok"},
        "failing": [],
    }
    assert "no-cache" in response["Cache-Control"]


def test_no_worker_heartbeat_is_503_naming_worker(client, health_redis):
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["failing"] == ["worker"]
    assert "no worker" in body["checks"]["worker"]
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["database"] == "ok"


def test_expired_heartbeat_counts_as_no_worker(client, health_redis):
    redis.Redis.from_url(health_redis).set(heartbeat.worker_key("gone"), "1", px=50)
    time.sleep(0.2)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["worker"]


def test_redis_down_is_503_naming_redis(client, db):
    closed = _redis_url(_free_port())

    with override_settings(REDIS_URL=closed):
        started = time.monotonic()
        response = client.get("/healthz")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert "redis" in body["failing"]
    assert body["checks"]["redis"].startswith("redis unreachable")
    assert body["checks"]["database"] == "ok"
    # The worker's state can't be known without Redis, and is not asked twice.
    assert body["checks"]["worker"] == "worker status unknown: redis unreachable"
    assert elapsed < 5


def test_real_redis_stopping_and_starting(client, db, spare_redis):
    port, start = spare_redis
    url = _redis_url(port)
    server = start()

    with override_settings(REDIS_URL=url):
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["failing"] == ["worker"]

        _beat(url)
        response = client.get("/healthz")
        assert response.status_code == 200, response.json()

        server.kill()
        server.wait(timeout=10)
        response = client.get("/healthz")
        assert response.status_code == 503
        body = response.json()
        assert "redis" in body["failing"]
        assert body["checks"]["redis"].startswith("redis unreachable")

        # The process keeps one pool per URL: it must reconnect once Redis is back.
        start()
        _beat(url)
        response = client.get("/healthz")
        assert response.status_code == 200, response.json()


def test_a_running_heartbeat_thread_makes_the_worker_healthy(client, health_redis, settings):
    # The sweeps share the thread; keep them off the test's database (not due for ages). Run,
    # they took more than the 10 s the test waits for the thread on a loaded machine, and the
    # thread went on into later tests, whose database it then was refused.
    settings.CELERY_BEAT_SCHEDULE_SECONDS = 10**9
    stop = heartbeat.start(hostname=f"pytest-{os.getpid()}")
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not heartbeat.workers_alive():
            time.sleep(0.05)
        response = client.get("/healthz")
    finally:
        stop.set()
        # Let the thread finish its last beat while REDIS_URL still points at the test's database.
        for thread in threading.enumerate():
            if thread.name == "panels-heartbeat":
                thread.join(timeout=10)
                assert not thread.is_alive(), "the heartbeat thread outlived its stop"

    assert response.status_code == 200, response.json()
    assert heartbeat.workers_alive() == [heartbeat.worker_key(f"pytest-{os.getpid()}")]


def test_healthz_is_get_only(client, db):
    assert client.post("/healthz").status_code == 405
