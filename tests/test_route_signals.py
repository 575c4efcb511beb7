"""The structural signals the learned router keeps: traces, errors, code, size, requested length."""

from __future__ import annotations

import pytest

from chat.route_signals import FEATURE_NAMES, signals_of


@pytest.mark.parametrize(
    "text",
    [
        'Traceback (most recent call last):\n  File "app.py", line 4, in <module>',
        'Exception in thread "main" java.lang.NullPointerException\n\tat com.acme.App.run(App.java:12)',
        "goroutine 7 [chan receive]:\nmain.main()",
        "thread 'main' panicked at 'index out of bounds'",
        "Segmentation fault (core dumped)",
    ],
)
def test_stack_traces_in_several_languages(text):
    assert signals_of(text).stack_trace


def test_an_error_line_without_frames():
    assert signals_of("TypeError: can't multiply sequence by non-int").error_line
    assert not signals_of("There was an error in my reasoning, sorry.").error_line


def test_code_is_seen_but_plain_prose_is_not():
    assert signals_of("Add type hints:\ndef greet(name, times):\n    return name").code
    assert not signals_of("Write a short poem about the sea.").code


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Write a 1,500-word story about a lighthouse", 1500),
        ("Écris une nouvelle de 2 000 mots", 2000),
        ("Ein Essay mit 1.200 Wörtern", 1200),
        ("写一篇1500字的小说", 1500),
        ("Shorten this to under 50 words", 50),
        ("Write a story about a lighthouse", None),
    ],
)
def test_requested_output_length(text, words):
    assert signals_of(text).requested_words == words


def test_long_and_short_output_requests():
    assert signals_of("An essay of about 2,000 words").long_output
    assert signals_of("A blurb under 40 words").short_output


def test_history_counts_towards_the_document_size():
    alone = signals_of("Now summarise it.")
    after_a_paste = signals_of("Now summarise it.", history_chars=9_000)
    assert alone.vector()[FEATURE_NAMES.index("long_doc")] == 0.0
    assert after_a_paste.vector()[FEATURE_NAMES.index("huge_doc")] == 1.0
    assert after_a_paste.reason() == "long document"


def test_the_scan_of_a_huge_paste_reads_its_tail():
    paste = "x = 1\n" * 50_000 + "ZeroDivisionError: division by zero"
    assert signals_of(paste).error_line
