"""Structural signals of a prompt: what its shape says, whatever its language.

The learned router reads meaning from a sentence embedding; these read what an
embedding of the request window cannot see: a stack trace or code anywhere in a
100K-character paste, the size of the paste (with the conversation before it),
and an explicit output length ("1,500 words", "under 50 words"). They are
features of the classifier and the reasons shown to users when they fire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Structural patterns are read over the whole message up to SCAN_HEAD + SCAN_TAIL
# characters, then over its head and tail only, so a huge paste costs no more.
SCAN_HEAD = 6_000
SCAN_TAIL = 2_000

# Sizes in characters (~4 per token for Latin scripts): a long document, a very long one.
LONG_DOC_CHARS = 1_500
VERY_LONG_DOC_CHARS = 4_000
HUGE_DOC_CHARS = 8_000

# "a 2,000-word story" asks for long output, "under 50 words" for templated output.
LONG_OUTPUT_WORDS = 400
SHORT_OUTPUT_WORDS = 80

_STACK_TRACE = re.compile(
    "|".join(
        (
            r"Traceback \(most recent call last\)",
            r'File "[^"\n]+", line \d+',  # Python frame
            r'Exception in thread "',
            r"\n[ \t]*at [\w$.<>/]+\([\w$]+\.(?:java|kt|scala):\d+\)",  # JVM frame
            r"\n[ \t]*at [^\n(]*\([^\n)]*\.[cm]?[jt]sx?:\d+:\d+\)",  # JS frame
            r"goroutine \d+ \[",
            r"\npanic: ",
            r"panicked at",
            r"egmentation fault|SIGSEGV|core dumped|EXC_BAD_ACCESS",
            r"fatal error: ",
        )
    )
)
# An exception name with its message: a bug report even without frames.
_ERROR_LINE = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b(?::|\n| at )|\bUncaught \w+|\berror\[E\d+\]")
_CODE = re.compile(
    r"```|=> \{|\) \{\n|\)\{\n|;\n|"
    r"\n[ \t]*(?:def|class|func|fn|function|import|const|let|var|public|private|int|void|struct|"
    r"CREATE TABLE|SELECT|for|while|if)\b[^\n]*[:({=;]"
)
# Numbers of words in most of the languages of the labelled set.
_WORD_COUNT = re.compile(
    r"(\d{1,2}[,. ]\d{3}|\d+)\s*-?\s*(?:words?|mots|wörter|wörtern|palabras|parole|palavras|woorden|слов\w*)\b"
    r"|(\d{1,2}[,.]?\d{3}|\d+)\s*(?:字|文字|자)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Signals:
    stack_trace: bool
    error_line: bool
    code: bool
    chars: int  # the message plus the conversation before it
    requested_words: int | None

    @property
    def long_output(self) -> bool:
        return self.requested_words is not None and self.requested_words >= LONG_OUTPUT_WORDS

    @property
    def short_output(self) -> bool:
        return self.requested_words is not None and self.requested_words <= SHORT_OUTPUT_WORDS

    def vector(self) -> list[float]:
        """The classifier's structural features, in FEATURE_NAMES order."""
        return [
            float(self.stack_trace),
            float(self.error_line),
            float(self.code),
            float(self.chars >= LONG_DOC_CHARS),
            float(self.chars >= VERY_LONG_DOC_CHARS),
            float(self.chars >= HUGE_DOC_CHARS),
            float(self.long_output),
            float(self.short_output),
        ]

    def reason(self) -> str | None:
        """The strongest structural reason for the flagship, if any fired."""
        if self.stack_trace:
            return "stack trace or crash dump"
        if self.error_line:
            return "error message"
        if self.long_output:
            return "long-form output requested"
        if self.chars >= VERY_LONG_DOC_CHARS:
            return "long document"
        return None


FEATURE_NAMES = (
    "stack_trace",
    "error_line",
    "code",
    "long_doc",
    "very_long_doc",
    "huge_doc",
    "long_output",
    "short_output",
)


def _scan_window(content: str) -> str:
    if len(content) <= SCAN_HEAD + SCAN_TAIL:
        return content
    return content[:SCAN_HEAD] + "\n" + content[-SCAN_TAIL:]


def _requested_words(text: str) -> int | None:
    match = _WORD_COUNT.search(text)
    if match is None:
        return None
    digits = re.sub(r"\D", "", match.group(1) or match.group(2))
    return int(digits) if digits else None


def signals_of(content: str, *, history_chars: int = 0) -> Signals:
    scan = "\n" + _scan_window(content)
    return Signals(
        stack_trace=_STACK_TRACE.search(scan) is not None,
        error_line=_ERROR_LINE.search(scan) is not None,
        code=_CODE.search(scan) is not None,
        chars=len(content) + history_chars,
        requested_words=_requested_words(content[:2_000] + content[-1_000:]),
    )
