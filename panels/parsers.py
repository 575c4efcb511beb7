"""The API's JSON parser: DRF's, refusing two inputs that would otherwise end in a 500.

- Nesting deeper than Python's recursion limit: the json module raises RecursionError,
  which is no ValueError, so DRF lets it through.
- NUL characters (U+0000): PostgreSQL's text and jsonb types can't store them, so the
  insert fails long after validation. No field of the API has a use for them.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


def contains_nul(data: Any) -> bool:
    """Whether any string (key or value) in parsed JSON holds a NUL; iterative, for deep data."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("The JSON body is nested too deeply.") from None
        if contains_nul(data):
            raise ParseError("Text in the request may not contain NUL (\\u0000) characters.")
        return data


class FormParser(parsers.FormParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if contains_nul([list(pair) for pair in data.lists()]):
            raise ParseError("Text in the request may not contain NUL (\\u0000) characters.")
        return data
