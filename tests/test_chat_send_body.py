"""The send's body check (chat/api.py: `MessageSendApi._validated`) answers as the
serializer does, for the bodies it checks itself and for those it hands on."""

from __future__ import annotations

import pytest
from rest_framework import serializers

from chat.api import MessageSendApi

BODIES = [
    {"content": "hello", "model": "demo"},
    {"content": "", "model": "auto"},
    {"content": "  spaced  ", "model": "demo", "extra": 1},
    {"content": "nul \x00 inside", "model": "demo"},
    {"content": "surrogate \ud800", "model": "demo"},
    {"content": "hi", "model": "m" * 61},
    {"content": "hi", "model": ""},
    {"content": 5, "model": "demo"},
    {"content": None, "model": "demo"},
    {"content": "hi"},
    {"model": "demo"},
    {"content": "hi", "model": "demo", "attachments": [{"type": "image", "url": "https://example.com/a.png"}]},
    {"content": "hi", "model": "demo", "attachments": "nope"},
    ["not", "an", "object"],
    "text",
]


def _serializer(body: object) -> tuple[str, object]:
    serializer = MessageSendApi.InputSerializer(data=body)
    if serializer.is_valid():
        return "ok", dict(serializer.validated_data)
    return "refused", serializer.errors


def _checked(body: object) -> tuple[str, object]:
    try:
        return "ok", dict(MessageSendApi._validated(body))
    except serializers.ValidationError as exc:
        return "refused", exc.detail


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_the_send_body_is_checked_as_the_serializer_checks_it(body):
    assert _checked(body) == _serializer(body)


def test_the_common_body_builds_no_serializer(monkeypatch):
    MessageSendApi._validated({"content": "warm", "model": "demo"})  # the fields, kept once

    def built(*args, **kwargs):
        raise AssertionError("a serializer was built")

    monkeypatch.setattr(MessageSendApi, "InputSerializer", built)
    assert MessageSendApi._validated({"content": "hi", "model": "demo"}) == {
        "content": "hi",
        "model": "demo",
        "attachments": [],
    }
