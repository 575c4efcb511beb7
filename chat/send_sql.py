"""A send's reads and writes on PostgreSQL as two prepared statements (chat/services.py's
`_send` calls them between the conversation's lock and the hold).

Through the ORM these cost the web process most of a send's CPU: compiling a query of
`chat_message`'s 27 columns, building a model instance per history row and per INSERT
(profiled under bench/compare.sh's 50 users: the history's read alone was a fifth of
the web process's CPU). Here each is written once, prepared once per connection
(wallet/ledger_sql.py's cursor), and reads only the columns a send uses:

- the history the model may see (the user's messages and the replies that produced
  text), and, when a cap applies, the user's replies in flight, counted in the same
  statement: both run after `_lock_for_send` locked the user's row, so the count is exact;
- the prompt's and the reply's INSERTs, the reply's context ending with the prompt's id.

The model's row, read before the transaction, is one prepared statement too.

SQLite keeps the ORM path (services.py).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from django.db import connection

from chat import raw_rows
from chat.models import Message, ModelSpec
from wallet import ledger_sql

_HISTORY = """
SELECT m.id, m.role, m.content, m.attachments::text
FROM chat_message m
WHERE m.conversation_id = %(conversation)s AND m.superseded_at IS NULL
  AND (m.role = 'user' OR (m.status IN ('done', 'cancelled') AND m.content <> ''))
ORDER BY m.id
"""

# One row even for an empty history: the count, then each message (or NULLs).
_HISTORY_AND_IN_FLIGHT = """
SELECT f.n, m.id, m.role, m.content, m.attachments::text
FROM (
    SELECT count(*) AS n FROM chat_message r JOIN chat_conversation c ON c.id = r.conversation_id
    WHERE c.user_id = %(user)s AND r.role = 'assistant' AND r.status IN ('queued', 'streaming')
) f LEFT JOIN chat_message m
  ON m.conversation_id = %(conversation)s AND m.superseded_at IS NULL
 AND (m.role = 'user' OR (m.status IN ('done', 'cancelled') AND m.content <> ''))
ORDER BY m.id
"""

# Every column of chat_message (tests/test_chat_statements.py checks the list against
# the model): the table has no database defaults.
_INSERT_PAIR = """
WITH p AS (
    INSERT INTO chat_message (conversation_id, role, content, attachments, status, model_id, requested_model,
        routed_by, retry_of_id, escalation_of_id, route_category, hold_id, context_ids, input_estimate, prices,
        input_tokens, output_tokens, usage_estimated, cost, error_code, error_message, cancel_requested,
        superseded_at, created_at, started_at, finished_at)
    VALUES (%(conversation)s, 'user', %(content)s, %(attachments)s::jsonb, 'done', NULL, '',
        '', NULL, NULL, '', NULL, '[]'::jsonb, 0, '{}'::jsonb,
        NULL, NULL, false, NULL, '', '', false,
        NULL, %(created_at)s, NULL, NULL)
    RETURNING id
)
INSERT INTO chat_message (conversation_id, role, content, attachments, status, model_id, requested_model,
    routed_by, retry_of_id, escalation_of_id, route_category, hold_id, context_ids, input_estimate, prices,
    input_tokens, output_tokens, usage_estimated, cost, error_code, error_message, cancel_requested,
    superseded_at, created_at, started_at, finished_at)
SELECT %(conversation)s, 'assistant', '', '[]'::jsonb, 'queued', %(model)s, %(requested_model)s,
    %(routed_by)s, NULL, NULL, '', NULL, %(context)s::jsonb || to_jsonb(p.id), %(input_estimate)s, %(prices)s::jsonb,
    NULL, NULL, false, NULL, '', '', false,
    NULL, %(created_at)s, NULL, NULL
FROM p
RETURNING id, (SELECT id FROM p)
"""

INSERT_COLUMNS = (
    "conversation_id role content attachments status model_id requested_model routed_by retry_of_id "
    "escalation_of_id route_category hold_id context_ids input_estimate prices input_tokens output_tokens "
    "usage_estimated cost error_code error_message cancel_requested superseded_at created_at started_at finished_at"
).split()


@dataclass
class Said:
    """A message of the history as a send reads it (what `_reply_create` uses of a Message)."""

    pk: int | None
    role: str
    content: str
    attachments: list = field(default_factory=list)


def enabled() -> bool:
    return connection.vendor == "postgresql"


# Built on first use (the app registry is ready then): the statement and each column's
# converters, so a send does not put the column list together again (about 75 us each time).
_model_converters: list[tuple] | None = None
_model_select: str | None = None


def model_by_slug(slug: str) -> ModelSpec | None:
    """The model's row, as `ModelSpec.objects.filter(slug=slug).first()` returns it (the slug
    is unique), from one prepared statement: the ORM's query building was about two fifths
    of what a send cost the web process once the statements below were written out."""
    global _model_converters, _model_select
    if _model_converters is None or _model_select is None:
        _model_converters = raw_rows.converters(ModelSpec, ModelSpec._meta.db_table)
        _model_select = _model_sql()
    with ledger_sql.cursor() as c:
        c.execute(_model_select, {"slug": slug})
        row = c.fetchone()
    return None if row is None else raw_rows.instance(ModelSpec, _model_converters, row)


def _model_sql() -> str:
    table = connection.ops.quote_name(ModelSpec._meta.db_table)
    return f"SELECT {raw_rows.columns(ModelSpec, table)} FROM {table} WHERE slug = %(slug)s"


def history_and_in_flight(*, conversation_id: int, user_id: int, count: bool) -> tuple[list[Said], int]:
    """The history the model may see, in order, and (with `count`) the user's replies in flight."""
    with ledger_sql.cursor() as c:
        if count:
            c.execute(_HISTORY_AND_IN_FLIGHT, {"conversation": conversation_id, "user": user_id})
            rows = c.fetchall()
            in_flight = rows[0][0]
            rows = [row[1:] for row in rows if row[1] is not None]
        else:
            c.execute(_HISTORY, {"conversation": conversation_id})
            rows = c.fetchall()
            in_flight = 0
    said = [Said(pk, role, content, [] if raw == "[]" else json.loads(raw)) for pk, role, content, raw in rows]
    return said, in_flight


def insert_pair(
    *,
    conversation_id: int,
    content: str,
    attachments: list[dict],
    spec: ModelSpec,
    requested_model: str,
    routed_by: str,
    context_before: list[int],
    input_estimate: int,
    prices: dict,
    created_at: dt.datetime,
) -> Message:
    """Store the prompt and its queued reply (its context: `context_before`, then the prompt);
    returns the reply."""
    with ledger_sql.cursor() as c:
        c.execute(
            _INSERT_PAIR,
            {
                "conversation": conversation_id,
                "content": content,
                "attachments": json.dumps(attachments),
                "model": spec.pk,
                "requested_model": requested_model,
                "routed_by": routed_by,
                "context": json.dumps(context_before),
                "input_estimate": input_estimate,
                "prices": json.dumps(prices),
                "created_at": created_at,
            },
        )
        reply_id, prompt_id = c.fetchone()
    reply = Message(
        pk=reply_id,
        conversation_id=conversation_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.QUEUED,
        model=spec,
        requested_model=requested_model,
        routed_by=routed_by,
        context_ids=[*context_before, prompt_id],
        input_estimate=input_estimate,
        prices=prices,
        created_at=created_at,
    )
    reply._state.adding = False
    reply._state.db = connection.alias
    return reply
