"""Entry digests: a content digest per entry, chained per wallet.

Each entry's `digest` is sha256(previous digest of its wallet + its content digest),
and the wallet row carries the newest one (`Account.chain_head`). Editing an entry
breaks its own digest; editing its digest too breaks the next entry's link, or the
wallet's head. The content is a length-prefixed string that PostgreSQL can build
as well (`CONTENT_SQL`), so the audit can verify the chain inside the database.
"""

from __future__ import annotations

import datetime as dt
import hashlib

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def micros(moment: dt.datetime) -> int:
    """Microseconds since the epoch, exactly (no float)."""
    return (moment - _EPOCH) // _MICROSECOND


def content_digest(
    *,
    kind: str,
    debit_account_id: int,
    credit_account_id: int,
    amount: int,
    idempotency_key: str,
    reference: str,
    memo: str,
    hold_id: int | None,
    created_at: dt.datetime,
) -> str:
    # One f-string, not a list joined: this runs for every post, in its caller's thread.
    debit, credit, amount_ = str(debit_account_id), str(credit_account_id), str(amount)
    hold = "" if hold_id is None else str(hold_id)
    at = str((created_at - _EPOCH) // _MICROSECOND)  # micros()
    text = (
        f"{len(kind)}:{kind}|{len(debit)}:{debit}|{len(credit)}:{credit}|{len(amount_)}:{amount_}|"
        f"{len(idempotency_key)}:{idempotency_key}|{len(reference)}:{reference}|{len(memo)}:{memo}|"
        f"{len(hold)}:{hold}|{len(at)}:{at}"
    )
    return hashlib.sha256(text.encode()).hexdigest()


def chain(previous: str, content: str) -> str:
    return hashlib.sha256((previous + content).encode()).hexdigest()


def _field_sql(expr: str) -> str:
    return f"char_length({expr}) || ':' || {expr}"


# The same content digest, computed by PostgreSQL from an entry row `e`.
CONTENT_SQL = (
    "encode(sha256(convert_to(concat_ws('|', "
    + ", ".join(
        _field_sql(expr)
        for expr in (
            "e.kind",
            "e.debit_account_id::text",
            "e.credit_account_id::text",
            "e.amount::text",
            "e.idempotency_key",
            "e.reference",
            "e.memo",
            "coalesce(e.hold_id::text, '')",
            "((extract(epoch from e.created_at) * 1000000)::bigint)::text",
        )
    )
    + "), 'UTF8')), 'hex')"
)

# sha256(previous || content) in SQL, for the chain step.
CHAIN_SQL = "encode(sha256(convert_to({previous} || {content}, 'UTF8')), 'hex')"
