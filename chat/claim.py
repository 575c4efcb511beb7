"""The worker's claim on PostgreSQL: one statement takes a queued reply (queued ->
streaming) and returns what its model call needs: the reply with its model, hold and
conversation, the database's clock, and the context's messages.

Three round trips before (the claim, the reply's read, the context's), one now: the
first token waits on one statement, and the worker's thread builds the rows itself
instead of through three compiled ORM queries. SQLite keeps the ORM's three statements
(chat/worker.py).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from django.db import connection

from chat import raw_rows
from chat.models import Conversation, Message, ModelSpec
from wallet import ledger_sql
from wallet.models import Hold


@dataclass
class Claimed:
    message: Message  # with .model, .hold and .conversation loaded
    db_now: dt.datetime
    context: dict[int, tuple[str, str, list]]  # id -> (role, content, attachments)


def _sql() -> str:
    q = connection.ops.quote_name
    message = q(Message._meta.db_table)
    cols = raw_rows.columns
    # The UPDATE's RETURNING gives the reply as it is now (streaming); the context's
    # messages are other rows, read in the same snapshot.
    return f"""WITH c AS (
    UPDATE {message} SET status = %(streaming)s, started_at = %(started)s
    WHERE id = %(id)s AND role = %(assistant)s
        AND (status = %(queued)s OR (status = %(streaming)s AND started_at = ANY(%(lost)s::timestamptz[])))
    RETURNING {cols(Message, message)}
)
SELECT {cols(Message, "c")}, {cols(ModelSpec, "s")}, {cols(Hold, "h")}, {cols(Conversation, "v")},
    now(),
    (SELECT json_agg(json_build_array(x.id, x.role, x.content, x.attachments))::text FROM {message} x
     WHERE x.id IN (SELECT value::bigint FROM jsonb_array_elements_text(c.context_ids)))
FROM c
JOIN {q(Conversation._meta.db_table)} v ON v.id = c.conversation_id
LEFT JOIN {q(ModelSpec._meta.db_table)} s ON s.id = c.model_id
LEFT JOIN {q(Hold._meta.db_table)} h ON h.id = c.hold_id"""


_MODELS = ((Message, "c"), (ModelSpec, "s"), (Hold, "h"), (Conversation, "v"))
_plan: dict[str, object] = {}


def claim(message_id: int, *, started_at: dt.datetime, lost_claims: tuple[dt.datetime, ...] = ()) -> Claimed | None:
    """Claim the reply with the mark `started_at` and load it, in one statement; None if
    it was not queued (a second delivery of the task, a cancelled reply, a deleted
    conversation). A reply streaming since one of `lost_claims` was claimed by an earlier
    attempt of this task whose answer was lost (chat/worker.py: ClaimUnanswered), and is
    taken again."""
    if "sql" not in _plan:
        _plan["sql"] = _sql()
        _plan["converters"] = [(model, raw_rows.converters(model, alias)) for model, alias in _MODELS]
    params = {
        "id": message_id,
        "started": started_at,
        "lost": list(lost_claims),
        "streaming": Message.Status.STREAMING,
        "queued": Message.Status.QUEUED,
        "assistant": Message.Role.ASSISTANT,
    }
    with ledger_sql.cursor() as cursor:
        cursor.execute(_plan["sql"], params)
        row = cursor.fetchone()
    if row is None:
        return None
    instances = []
    at = 0
    for model, converters in _plan["converters"]:
        instances.append(raw_rows.instance(model, converters, row[at : at + len(converters)]))
        at += len(converters)
    message, spec, hold, conversation = instances
    for name, related in (("model", spec), ("hold", hold), ("conversation", conversation)):
        Message._meta.get_field(name).set_cached_value(message, related)
    db_now, context = row[at], row[at + 1]
    return Claimed(
        message=message,
        db_now=db_now,
        context={pk: (role, content, attachments) for pk, role, content, attachments in json.loads(context or "[]")},
    )
