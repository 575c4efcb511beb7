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
from wallet.models import Account, Hold

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
    """A message of the history as a send reads it (what `_reply_queue` uses of a Message)."""

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


# --- the send: the reads, then one write before COMMIT -------------------------------
#
# `open_send` runs the lock of the user's and the conversation's rows
# (services._lock_for_send's statement), then reads the model's row and the history, each
# statement with its own snapshot, so the history is read after the lock is taken.
# (Sending the three as one psycopg pipeline was measured and did not help: psycopg waits
# for BEGIN on its own even in pipeline mode, and its pipeline costs about what the two
# round trips it saves cost on loopback.) `store_and_hold` then writes the prompt, the
# reply, the hold (the wallet's row locked from it to the COMMIT), the hold's link to the
# API key the send acts with and the Idempotency-Key's record in one statement.


@dataclass
class Opened:
    found: bool  # the conversation is the user's and still exists (its row is locked)
    title: str
    system_prompt: str
    wallet_id: int | None
    spec: ModelSpec | None
    history: list[Said]
    in_flight: int


# services._lock_for_send's statement on PostgreSQL: the user's row, then the conversation's.
_LOCK = (
    "WITH u AS (SELECT id FROM {user} WHERE id = %s FOR NO KEY UPDATE) "
    "UPDATE chat_conversation SET updated_at = %s, title = CASE WHEN title = '' THEN %s ELSE title END FROM u "
    "WHERE chat_conversation.id = %s AND chat_conversation.user_id = u.id "
    "RETURNING chat_conversation.title, chat_conversation.system_prompt,"
    " (SELECT w.id FROM wallet_account w WHERE w.user_id = chat_conversation.user_id)"
)
_lock_statement: str | None = None


def lock_statement() -> str:
    """The lock's statement; its parameters: the user's id, now, the title, the conversation's id."""
    global _lock_statement
    if _lock_statement is None:
        from django.contrib.auth import get_user_model

        _lock_statement = _LOCK.format(user=get_user_model()._meta.db_table)
    return _lock_statement


def open_send(
    *, conversation_id: int, user_id: int, title: str, now: dt.datetime, slug: str | None, count: bool
) -> Opened:
    """The send's lock (touching the conversation), the model's row (`slug`; None: not
    read) and the history with the count in flight, in the caller's transaction."""
    global _model_converters, _model_select
    if slug is not None and (_model_converters is None or _model_select is None):
        _model_converters = raw_rows.converters(ModelSpec, ModelSpec._meta.db_table)
        _model_select = _model_sql()
    with ledger_sql.cursor() as c:
        c.execute(lock_statement(), [user_id, now, title[:200], conversation_id])
        row = c.fetchone()
        if row is None:  # not the user's, or deleted: nothing more to read
            return Opened(False, "", "", None, None, [], 0)
        spec_row = None
        if slug is not None:
            c.execute(_model_select, {"slug": slug})
            spec_row = c.fetchone()
        if count:
            c.execute(_HISTORY_AND_IN_FLIGHT, {"conversation": conversation_id, "user": user_id})
        else:
            c.execute(_HISTORY, {"conversation": conversation_id})
        rows = c.fetchall()
    in_flight = 0
    if count:
        in_flight = rows[0][0]
        rows = [r[1:] for r in rows if r[1] is not None]
    said = [Said(pk, role, content, [] if raw == "[]" else json.loads(raw)) for pk, role, content, raw in rows]
    spec = None if spec_row is None else raw_rows.instance(ModelSpec, _model_converters, spec_row)
    return Opened(True, row[0], row[1], row[2], spec, said, in_flight)


_MESSAGE_COLUMNS = ", ".join(["id", *INSERT_COLUMNS])

# The reply's hold is named for the reply (chat/services.py: `_reply_hold`'s key).
_REPLY_HOLD_KEY = "'message:' || ids.reply_id"

_STORE_AND_HOLD = f"""
WITH ids AS MATERIALIZED (
    -- The prompt's id, then the reply's, drawn first: the hold's key names the reply.
    SELECT min(v) AS prompt_id, max(v) AS reply_id
    FROM (SELECT nextval(pg_get_serial_sequence('chat_message', 'id')) AS v FROM generate_series(1, 2)) s
), {ledger_sql.hold_steps(key=_REPLY_HOLD_KEY, reference=_REPLY_HOLD_KEY, also_from=", ids")}, p AS (
    INSERT INTO chat_message ({_MESSAGE_COLUMNS})
    SELECT ids.prompt_id, %(conversation)s, 'user', %(content)s, %(attachments)s::jsonb, 'done', NULL, '',
        '', NULL, NULL, '', NULL, '[]'::jsonb, 0, '{{{{}}}}'::jsonb,
        NULL, NULL, false, NULL, '', '', false,
        NULL, %(created_at)s, NULL, NULL
    FROM ids
    RETURNING 1
), r AS (
    INSERT INTO chat_message ({_MESSAGE_COLUMNS})
    SELECT ids.reply_id, %(conversation)s, 'assistant', '', '[]'::jsonb, 'queued', %(model)s, %(requested_model)s,
        %(routed_by)s, NULL, NULL, '', CASE WHEN h.status = 'pending' THEN h.id END,
        %(context)s::jsonb || to_jsonb(ids.prompt_id), %(input_estimate)s, %(prices)s::jsonb,
        NULL, NULL, false, NULL, '', '', false,
        NULL, %(created_at)s, NULL, NULL
    FROM ids LEFT JOIN h ON true
    RETURNING 1
){{link}}{{send_key}}
SELECT ids.reply_id, ids.prompt_id, h.id, h.status, h.reason, h.expires_at, h.created_at, h.resolved_at,
    a.available, a.frozen_reason, {{linked}}
FROM ids CROSS JOIN a LEFT JOIN h ON true
"""

# The hold linked to the API key the send acts with, only while the key is still active
# (openai_api/key_spend.py: `_link`'s rule, in the hold's statement).
_LINK = """, k AS (
    INSERT INTO {keyhold} (api_key_id, hold_id, created_at)
    SELECT k.id, h.id, %(now)s FROM h, {apikey} k JOIN {user} u ON u.id = k.user_id
    WHERE h.status = 'pending' AND k.id = %(api_key)s AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > %(now)s) AND u.is_active
    RETURNING 1
)"""

# The Idempotency-Key's record (chat/send_keys.py); a second request racing on the key
# fails on the unique index and rolls back, as the ORM's INSERT did.
_SEND_KEY = """, s AS (
    INSERT INTO {sendkey} (user_id, key, fingerprint, status_code, reply_id, error, created_at)
    SELECT %(user)s, %(send_key)s, %(fingerprint)s, 202, ids.reply_id, NULL, %(now)s FROM ids
    RETURNING 1
)"""

_store_statements: dict[tuple[bool, bool], str] = {}


def _store_sql(*, link: bool, send_key: bool) -> str:
    sql = _store_statements.get((link, send_key))
    if sql is None:
        from django.contrib.auth import get_user_model

        from chat.models import SendKey
        from openai_api.models import KeyHold
        from panels.models import ApiKey

        q = connection.ops.quote_name
        sql = _STORE_AND_HOLD.format(
            link=_LINK.format(
                keyhold=q(KeyHold._meta.db_table),
                apikey=q(ApiKey._meta.db_table),
                user=q(get_user_model()._meta.db_table),
            )
            if link
            else "",
            send_key=_SEND_KEY.format(sendkey=q(SendKey._meta.db_table)) if send_key else "",
            linked="(SELECT count(*) FROM k)" if link else "0",
        )
        _store_statements[(link, send_key)] = sql
    return sql


@dataclass(frozen=True)
class Stored:
    reply: Message
    hold: Hold | None  # None: the wallet is frozen (nothing was held)
    available: int
    frozen_reason: str
    linked: bool


def store_and_hold(
    *,
    conversation_id: int,
    user_id: int,
    content: str,
    attachments: list[dict],
    spec: ModelSpec,
    requested_model: str,
    routed_by: str,
    context_before: list[int],
    input_estimate: int,
    prices: dict,
    created_at: dt.datetime,
    account_id: int,
    amount: int,
    ttl_seconds: int,
    api_key_id: int | None,
    send_key: tuple[str, str] | None,
) -> Stored:
    """The prompt, its queued reply and the reply's hold of `amount` (the reply's `hold_id`
    when placed), the hold's link to `api_key_id` and the record of `send_key` (key,
    fingerprint): one statement. The caller refuses a rejected hold, a frozen wallet or
    an unlinked key by raising, which rolls the transaction back."""
    params = {
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
        "account": account_id,
        "amount": amount,
        "ttl": ttl_seconds,
        "now": created_at,
        "api_key": api_key_id,
        "user": user_id,
        "send_key": send_key[0] if send_key else None,
        "fingerprint": send_key[1] if send_key else None,
    }
    with ledger_sql.cursor() as c:
        c.execute(_store_sql(link=api_key_id is not None, send_key=send_key is not None), params)
        row = c.fetchone()
    if row is None:
        raise Account.DoesNotExist(f"no account {account_id}")
    reply_id, prompt_id, hold_id, status, reason, expires_at, hold_created, resolved_at, available, frozen, linked = row
    hold = None
    if hold_id is not None:
        key = f"message:{reply_id}"
        hold = ledger_sql.placed_hold(
            hold_id, account_id, amount, key, key, (status, reason, expires_at, hold_created, resolved_at)
        )
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
        hold_id=hold_id if hold is not None and status == Hold.Status.PENDING else None,
    )
    reply._state.adding = False
    reply._state.db = connection.alias
    if reply.hold_id is not None:
        reply.hold = hold
    return Stored(reply, hold, available, frozen, bool(linked))
