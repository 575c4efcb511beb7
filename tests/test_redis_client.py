"""panels/redis_client.py: one client per process, shared by threads, rebuilt after a fork."""

from __future__ import annotations

import json
import os
import threading
import uuid

from panels import redis_client
from panels.redis_client import get_redis
from tests.conftest import REDIS_URL


def test_one_client_and_pool_per_process_shared_by_threads():
    first = get_redis()
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(get_redis())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(client is first for client in seen)
    assert get_redis().connection_pool is first.connection_pool
    assert first.connection_pool.max_connections == 2000
    assert first.ping()


def test_another_url_gets_its_own_client(settings):
    ours = get_redis()
    settings.REDIS_URL = REDIS_URL.rsplit("/", 1)[0] + "/1"

    other = get_redis()

    assert other is not ours and other.connection_pool is not ours.connection_pool
    assert other.connection_pool.connection_kwargs["db"] == 1
    assert get_redis() is other


def test_a_forked_child_builds_its_own_client_and_leaves_the_parents_connections_alone():
    parent = get_redis()
    key = f"test-fork:{uuid.uuid4().hex}"
    parent.set(key, b"parent")  # the parent holds a live connection in its pool
    in_use = parent.connection_pool._created_connections
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            child = get_redis()
            report = {
                "new_client": child is not parent,
                "new_pool": child.connection_pool is not parent.connection_pool,
                "pool_pid_is_child": child.connection_pool.pid == os.getpid(),
                "table": [k[0] for k in redis_client._clients],
                "reads": child.get(key).decode(),
                "same_again": get_redis() is child,
            }
            child.set(key, b"child")
        except Exception as exc:  # reported to the parent, which fails the test
            report = {"error": repr(exc)}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    report = json.loads(os.read(read, 10_000).decode())
    os.close(read)

    assert status == 0 and "error" not in report, report
    assert report["new_client"] and report["new_pool"] and report["pool_pid_is_child"], report
    assert report["table"] == [pid] and report["reads"] == "parent" and report["same_again"]
    # The parent's client goes on over its own connections, unharmed by the child's exit.
    assert get_redis() is parent and parent.get(key) == b"child"
    assert parent.connection_pool._created_connections == in_use
    parent.delete(key)
