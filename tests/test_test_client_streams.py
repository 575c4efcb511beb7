"""The suite's guard against CPython gh-148891 (tests/conftest.py): a streaming response the
test client returned and the test dropped half-read is closed after the test body, never by
the cyclic garbage collector, whose closing of it set a ContextVar from inside another
ContextVar.set and crashed the interpreter now and then on Python 3.11."""

from __future__ import annotations

import gc

import pytest
from django.core.signals import request_finished
from django.urls import reverse

from tests.conftest import close_test_client_streams
from tests.wallet_helpers import funded_wallet


@pytest.fixture
def finished_requests():
    """Each request_finished, noted as sent from inside a garbage collection or not."""
    collecting = [False]
    seen: list[str] = []

    def on_gc(phase: str, info: dict) -> None:
        collecting[0] = phase == "start"

    def on_finished(sender, **kwargs) -> None:
        seen.append("inside gc" if collecting[0] else "outside gc")

    gc.callbacks.append(on_gc)
    request_finished.connect(on_finished)
    yield seen
    request_finished.disconnect(on_finished)
    gc.callbacks.remove(on_gc)


def drop_a_half_read_export(client) -> None:
    response = client.get(reverse("wallet_export"))
    assert response.status_code == 200 and response.streaming
    assert next(iter(response.streaming_content))  # the header row; the rest is never read


def test_a_dropped_stream_is_not_closed_by_the_garbage_collector(alice_client, alice, finished_requests):
    funded_wallet(alice, 1_000)
    for _ in range(3):
        drop_a_half_read_export(alice_client)
    gc.collect()
    # Without the guard each dropped response is a cycle the collection closes (three
    # request_finished "inside gc"); with it nothing is finished yet.
    assert finished_requests == []

    close_test_client_streams()  # what the suite does after each test body
    assert finished_requests == ["outside gc"] * 3
