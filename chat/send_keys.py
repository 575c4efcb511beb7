"""Idempotency-Key on sends and retries: a repeat of a key answers its first outcome.

The rules are the ledger's (docs DESIGN "Reliability rules", after Stripe's idempotent
requests): the same key with the same request returns the first outcome, the refusal for
lack of credits included (a new attempt after a top-up takes a new key); the same key with
another request is a 409. Requests refused before anything was attempted (a bad body, an
unknown model) store nothing, so the key can be used again with a corrected body.

The key's row is inserted in the transaction that stores the reply and places its hold:
of two requests racing on one key, the second waits on the unique index, fails, rolls back
everything it wrote and answers the first one's outcome.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from chat.errors import Conflict, ServiceUnavailable
from chat.models import Message, SendKey
from wallet.errors import InsufficientCredits

MAX_KEY_LENGTH = 255


class Remember:
    """What an attempt calls, inside its transaction, once its reply exists: it stores the
    key's record. A send that writes its rows in one statement (chat/send_sql.py) writes
    the record in it instead, from `record`."""

    def __init__(self, user: AbstractBaseUser | None = None, key: str = "", digest: str = "") -> None:
        self.user, self.key, self.digest = user, key, digest

    @property
    def record(self) -> tuple[str, str] | None:
        """(key, fingerprint) to store with a 202, or None: no Idempotency-Key."""
        return (self.key, self.digest) if self.key else None

    def __call__(self, reply: Message) -> None:
        if self.key:
            SendKey.objects.create(user=self.user, key=self.key, fingerprint=self.digest, status_code=202, reply=reply)


def fingerprint(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _stored(*, user: AbstractBaseUser, key: str, digest: str) -> SendKey | None:
    record = SendKey.objects.select_related("reply__model", "reply__hold").filter(user=user, key=key).first()
    if record is not None and record.fingerprint != digest:
        raise Conflict(
            "This Idempotency-Key was already used with a different request; use a new key for a new message.",
            code="idempotency_key_reused",
        )
    return record


def _replay(record: SendKey) -> Message:
    if record.status_code == 402:
        raise InsufficientCredits(needed=record.error["needed"], available=record.error["available"])
    if record.status_code == 503:
        raise ServiceUnavailable(record.error["message"])
    return record.reply


def send_once(*, user: AbstractBaseUser, key: str, request: dict, attempt: Callable[[Remember], Message]) -> Message:
    """`attempt(remember)` once per (user, key); a repeat returns or raises what the first did."""
    if not key:
        return attempt(Remember())
    digest = fingerprint(request)
    if (record := _stored(user=user, key=key, digest=digest)) is not None:
        return _replay(record)

    try:
        return attempt(Remember(user, key, digest))
    except IntegrityError:
        # Another request with this key committed first; this one's transaction rolled back.
        if (record := _stored(user=user, key=key, digest=digest)) is None:
            raise
        return _replay(record)
    except InsufficientCredits as exc:
        # Nothing was stored (the transaction rolled back): record the refusal under the key.
        try:
            with transaction.atomic():
                SendKey.objects.create(
                    user=user,
                    key=key,
                    fingerprint=digest,
                    status_code=402,
                    error={"needed": exc.needed, "available": exc.available},
                )
        except IntegrityError:
            if (record := _stored(user=user, key=key, digest=digest)) is None:
                raise
            return _replay(record)
        raise
    except ServiceUnavailable as exc:
        # Committed, then the broker refused the reply (it is failed, its hold voided).
        SendKey.objects.filter(user=user, key=key).update(status_code=503, error={"message": exc.message})
        raise
