"""The web process as scripts/run.sh and production run it (uvicorn): 1,000 open reply
streams hold neither a thread nor a database connection each, and the site still answers;
static files come from whitenoise; an unknown page is the site's own 404, not Django's
debug page."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import requests

from tests.reliability.conftest import User, manage, report

pytestmark = pytest.mark.slow

STREAMS = 1000


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count in /proc")


async def _open_stream(port: int, path: str, key: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0].endswith(b"200 OK"), head[:300]
    # The first event (the reconnect delay) proves the stream is open and being served.
    await reader.readuntil(b"retry: ")
    return reader, writer


def test_uvicorn_serves_1000_open_streams_and_the_site(stack, tmp_path):
    static_root = tmp_path / "static"
    collected = manage(stack.database_url, "collectstatic", "--no-input", "-v0", env={"STATIC_ROOT": str(static_root)})
    assert collected.returncode == 0, collected.stderr[-2000:]
    web = stack.start_web(server="uvicorn", STATIC_ROOT=str(static_root))
    port = int(web.url.rsplit(":", 1)[1])
    user = User(stack.seed_users(1)[0], web.url)
    # No worker runs: the reply stays queued, and every reader waits on its stream.
    sent = user.send(user.conversation(), "Hello")
    assert sent.status_code == 202, sent.text[:500]
    path = f"/api/v1/messages/{sent.json()['id']}/stream"
    threads_before = _threads(web.proc.popen.pid)
    database = stack.database_url.rsplit("/", 1)[1]

    async def scenario() -> dict:
        opened = await asyncio.wait_for(
            asyncio.gather(*(_open_stream(port, path, user.info["api_key"]) for _ in range(STREAMS))), timeout=300
        )
        try:
            # The rest of the site, while every stream is open.
            home = await asyncio.to_thread(requests.get, web.url + "/", timeout=60)
            wallet = await asyncio.to_thread(user.get, "/api/v1/wallet", 60)
            css = await asyncio.to_thread(requests.get, web.url + "/static/css/site.css", timeout=60)
            missing = await asyncio.to_thread(requests.get, web.url + "/no-such-page/", timeout=60)
            figures = {
                "threads": _threads(web.proc.popen.pid),
                "db_connections": stack.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [database])[0][
                    0
                ],
                "still_open": sum(1 for _, w in opened if not w.is_closing()),
            }
            return {"home": home, "wallet": wallet, "css": css, "missing": missing, **figures}
        finally:
            for _, writer in opened:
                writer.close()

    seen = asyncio.run(scenario())
    report(
        "open streams",
        streams=STREAMS,
        threads_before=threads_before,
        threads_with_streams=seen["threads"],
        db_connections=seen["db_connections"],
    )
    assert seen["still_open"] == STREAMS
    assert seen["home"].status_code == 200 and "Panels" in seen["home"].text
    assert seen["wallet"].status_code == 200, seen["wallet"].text[:300]
    # A thread (or a database connection) per stream would show here as about 1,000.
    assert seen["threads"] < threads_before + 50, seen
    assert seen["db_connections"] < 20, seen
    # Static files by whitenoise, with a cache lifetime; a 404 of the site's own (DEBUG is off).
    assert seen["css"].status_code == 200 and "max-age" in seen["css"].headers.get("Cache-Control", "")
    assert seen["missing"].status_code == 404
    assert "Page not found" in seen["missing"].text
    assert "URLconf" not in seen["missing"].text and "DEBUG = True" not in seen["missing"].text
    assert web.proc.alive, web.proc.log_tail()
