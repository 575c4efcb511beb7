"""Entry digests: a content digest per entry, chained per wallet.

Each entry's `digest` is sha256(previous digest of its wallet + its content digest),
and the wallet row carries the newest one (`Account.chain_head`). Editing an entry
breaks its own digest; editing its digest too breaks the next entry's link, or the
wallet's head. The content is a length-prefixed string that PostgreSQL can build
as well (`CONTENT_SQL`), so the audit can verify the chain inside the database.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def micros(moment: dt.datetime) -> int:
    """Microseconds since the epoch, exactly (no float)."""
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def micros_from_text(text: str) -> int:
    """`micros` of a timestamp as PostgreSQL prints it in UTC ('2026-01-01 00:00:00.5+00');
    the audit reads millions, so the hour is parsed once and the rest by hand."""
    if len(text) >= 22 and text.endswith("+00") and text[13] == ":" and text[16] == ":":
        rest = text[14:-3]  # MM:SS[.ffffff]
        frac = rest[6:]
        return (
            _hour_micros(text[:13])
            + (int(rest[:2]) * 60 + int(rest[3:5])) * 1_000_000
            + (int(frac.ljust(6, "0")) if frac else 0)
        )
    return micros(dt.datetime.fromisoformat(text))


@functools.lru_cache(maxsize=4096)
def _hour_micros(hour: str) -> int:
    return micros(dt.datetime.fromisoformat(hour + ":00:00+00:00"))


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
    fields = [
        kind,
        str(debit_account_id),
        str(credit_account_id),
        str(amount),
        idempotency_key,
        reference,
        memo,
        "" if hold_id is None else str(hold_id),
        str(micros(created_at)),
    ]
    return hashlib.sha256("|".join(f"{len(f)}:{f}" for f in fields).encode()).hexdigest()


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
