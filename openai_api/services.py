"""Calls to the OpenAI-compatible API: begin (key, limits, hold) and finish (post or void).

The same money rules as a chat reply, through the same wallet services: a hold for the
worst case (estimated input + max output tokens) before the model is called, a post
at the reported usage after it, a void when it failed, and a charge for the part
generated when the client went away. The key's spend limit is checked under a lock on
the key row in the transaction that places the hold, so concurrent calls on one key
(chat replies sent with it included) can't together pass it (openai_api/key_spend.py).
A call whose web process died is failed (and its hold voided) by `calls_fail_stale`,
which runs with the hold sweep.

No transaction is open while the model is called: `call_begin` commits before, and
`call_finish` opens its own after.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from chat.costs import rates, reply_cost
from chat.errors import ModelUnavailable
from chat.models import ModelSpec
from chat.providers import ProviderError
from chat.routing import route_for_message
from chat.tokens import estimate_output_tokens, estimate_request_tokens
from openai_api import cache, shapes
from openai_api.errors import OpenAIError
from openai_api.key_spend import KeyInactive, KeyLimitExceeded, key_hold
from openai_api.limits import key_rate_check
from openai_api.models import ApiCall
from openai_api.request import CompletionRequest, parse
from openai_api.upstream import Usage
from panels.models import ApiKey
from wallet import ledger_sql
from wallet.batching import wallet_post_along_batched
from wallet.errors import HoldNotPending, InsufficientCredits, WalletFrozen
from wallet.services import wallet_hold, wallet_post, wallet_void

log = logging.getLogger(__name__)

AUTO = "auto"
TOPUP_URL = "/wallet/topup/"
# A call stops streaming this long before its hold expires, so it can still be settled.
SETTLE_MARGIN_SECONDS = 10


@dataclass
class Begun:
    call: ApiCall
    spec: ModelSpec
    request: CompletionRequest
    max_tokens: int
    deadline: float  # time.monotonic() by which the stream must end

    @property
    def panels(self) -> dict:
        info: dict = {"requested_model": self.call.requested_model, "upstream_model": self.spec.upstream_id}
        if self.call.requested_model == AUTO:
            info.update(tier=self.call.tier, reason=self.call.routed_by)
        return info


@dataclass(frozen=True)
class Replay:
    """The first outcome of a call made with this Idempotency-Key (or a refusal recorded now)."""

    status: int
    body: dict
    stream: bool


@dataclass(frozen=True)
class Finished:
    status: str
    usage: Usage
    cost: int
    estimated: bool
    error: OpenAIError | None = None


# --- keys -------------------------------------------------------------------------


def _key_invalid() -> OpenAIError:
    return OpenAIError(
        401,
        "Incorrect API key provided, or the key has been revoked or has expired. "
        "You can make a key on your account page.",
        code="invalid_api_key",
    )


def key_authenticate(authorization: str) -> ApiKey:
    keyword, _, secret = (authorization or "").partition(" ")
    if keyword != "Bearer" or not secret.strip():
        raise OpenAIError(
            401,
            "You didn't provide an API key. Send your Panels API key in an Authorization header "
            "using Bearer auth (Authorization: Bearer pnl_...). Keys are made on the account page.",
            code="missing_api_key",
        )
    api_key = cache.key_verified(secret.strip())
    if api_key is None:
        raise _key_invalid()
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > dt.timedelta(minutes=1):
        # At most one write a minute per key and process (the key may be a cached one).
        api_key.last_used_at = now
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key


# --- begin ------------------------------------------------------------------------


def _resolve(request: CompletionRequest) -> tuple[ModelSpec, str, str]:
    if request.model == AUTO:
        users = [t for t in request.turns if t.role == "user"]
        last = users[-1] if users else request.turns[-1]
        history = [t.text for t in request.turns if t is not last]
        try:
            route = route_for_message(content=last.text, history=history, images=request.images > 0)
        except ModelUnavailable as exc:
            raise OpenAIError(503, exc.message, code="model_unavailable", type="server_error") from exc
        return route.spec, route.tier, route.reason
    spec = cache.model_enabled(request.model)
    if spec is None:
        raise OpenAIError(
            404,
            f"The model `{request.model}` does not exist or you do not have access to it. "
            "GET /v1/models lists the models you can use.",
            code="model_not_found",
            param="model",
        )
    if not spec.available:
        raise OpenAIError(
            503,
            f"{spec.name} is temporarily unavailable.",
            code="model_unavailable",
            param="model",
            type="server_error",
        )
    return spec, "", ""


def affordable_output_tokens(*, available: int, input_tokens: int, spec: ModelSpec) -> int:
    """How many output tokens `available` credits pay for after the input's estimate."""
    # At the rates of the tier a prompt of this size falls in.
    input_rate, output_rate = rates(spec.prices_snapshot(), input_tokens=input_tokens)
    budget = Decimal(max(available, 0)) * Decimal(1_000_000) / Decimal(settings.CREDITS_PER_USD)
    left = budget - Decimal(input_tokens) * input_rate
    if left <= 0:
        return 0
    if output_rate <= 0:
        return spec.max_output_tokens
    return min(math.floor(left / output_rate), spec.max_output_tokens)


def _refuse(call: ApiCall, error: OpenAIError) -> Replay:
    call.status = ApiCall.Status.REFUSED
    call.cost = 0
    call.error_code = (error.code or "")[:40]
    call.error_message = error.message[:500]
    call.response_status = error.status
    call.response_body = error.body()
    call.finished_at = timezone.now()
    call.save()
    return Replay(status=error.status, body=error.body(), stream=call.stream)


def _existing(user_id: int, idempotency_key: str, body_hash: str) -> Replay:
    first = ApiCall.objects.get(user_id=user_id, idempotency_key=idempotency_key)
    if first.request_hash != body_hash:
        raise OpenAIError(
            409,
            "This Idempotency-Key was already used with a different request body. Use a new key for a new request.",
            code="idempotency_key_reused",
        )
    if first.status == ApiCall.Status.STREAMING or first.response_body is None:
        raise OpenAIError(
            409,
            "A request with this Idempotency-Key is still running; retry once it has finished.",
            code="idempotency_key_in_progress",
            retry_after=1,
        )
    return Replay(status=first.response_status or 200, body=first.response_body, stream=first.stream)


def call_begin(*, authorization: str, body: bytes, idempotency_key: str = "") -> Begun | Replay:
    """Authenticate, check the body, pick the model and hold the worst case; commits before returning."""
    api_key = key_authenticate(authorization)
    key_rate_check(api_key)
    request = parse(body)
    user = api_key.user
    idempotency_key = idempotency_key.strip()
    if len(idempotency_key) > 200:
        raise OpenAIError(400, "The Idempotency-Key header is at most 200 characters.", code="invalid_value")
    if idempotency_key and ApiCall.objects.filter(user=user, idempotency_key=idempotency_key).exists():
        return _existing(user.pk, idempotency_key, request.body_hash)

    spec, tier, reason = _resolve(request)
    if request.images and not spec.image_input:
        raise OpenAIError(400, f"{spec.name} does not accept images.", code="image_input_unsupported", param="messages")
    if request.max_tokens is not None and request.max_tokens > spec.max_output_tokens:
        raise OpenAIError(
            400,
            f"{request.max_tokens_param} is too large: {request.max_tokens}. This model supports at most "
            f"{spec.max_output_tokens} completion tokens, whereas you provided {request.max_tokens}.",
            code="invalid_value",
            param=request.max_tokens_param,
        )
    max_tokens = request.max_tokens or spec.max_output_tokens
    # Per model: its provider's tokenizer scale and image formula, as the chat send does.
    input_estimate = estimate_request_tokens(spec, request.upstream_messages())
    if input_estimate + max_tokens > spec.context_window:
        raise OpenAIError(
            400,
            f"This model's maximum context length is {spec.context_window} tokens. However, you requested "
            f"{input_estimate + max_tokens} tokens ({input_estimate} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.",
            code="context_length_exceeded",
            param="messages",
        )
    # The call keeps the prices it is held at (tiers included): a price change never alters it.
    prices = spec.prices_snapshot()
    worst_case = max(reply_cost(prices, input_tokens=input_estimate, output_tokens=max_tokens), 1)
    store = settings.API_STORE_CONTENT
    account = cache.wallet_of(user)  # outside the transaction: a wallet made in it could roll back
    fields = dict(
        user=user,
        api_key=api_key,
        model=spec,
        requested_model=request.model[:60],
        tier=tier,
        routed_by=reason,
        stream=request.stream,
        reserved=worst_case,
        input_estimate=input_estimate,
        prices=prices,
        max_output_tokens=max_tokens,
        idempotency_key=idempotency_key,
        request_hash=request.body_hash if idempotency_key else "",
        prompt=[{"role": t.role, "content": t.content} for t in request.turns] if store else None,
    )
    try:
        with transaction.atomic():
            if idempotency_key:
                try:
                    with transaction.atomic():
                        call = ApiCall.objects.create(**fields)
                except IntegrityError:
                    # The same key, sent twice at once: the other request got there first.
                    return _existing(user.pk, idempotency_key, request.body_hash)
            else:
                call = ApiCall.objects.create(**fields)  # no key, nothing unique: no savepoint
            try:
                hold = key_hold(
                    api_key=api_key,
                    amount=worst_case,
                    place=lambda: wallet_hold(
                        account=account,
                        amount=worst_case,
                        idempotency_key=f"apicall:{call.pk}",
                        reference=f"apicall:{call.pk}",
                        attach=(ApiCall._meta.db_table, call.pk),  # the call's hold_id, in the same write
                    ),
                )
            except KeyLimitExceeded as exc:
                afford = affordable_output_tokens(available=exc.left, input_tokens=input_estimate, spec=spec)
                return _refuse(
                    call,
                    OpenAIError(
                        402,
                        f"This request would pass this API key's spend limit of {exc.limit_label}: "
                        f"{exc.spent:,} credits are spent or reserved (chat replies sent with this key included), "
                        f"{exc.left:,} are left, and this request may cost up to {worst_case:,} "
                        f"({input_estimate:,} input tokens estimated + {max_tokens:,} output tokens). What is left "
                        f"covers about {afford:,} output tokens: lower {request.max_tokens_param}, or raise the "
                        "key's limit on the account page.",
                        code="key_limit_exceeded",
                        param=request.max_tokens_param,
                        extra={"affordable_output_tokens": afford},
                    ),
                )
            except InsufficientCredits as exc:
                afford = affordable_output_tokens(available=exc.available, input_tokens=input_estimate, spec=spec)
                return _refuse(
                    call,
                    OpenAIError(
                        402,
                        f"Not enough credits: this request may cost up to {worst_case:,} credits "
                        f"({input_estimate:,} input tokens estimated + {max_tokens:,} output tokens at {spec.name}'s "
                        f"prices) and your wallet has {exc.available:,} available. That covers about {afford:,} "
                        f"output tokens: lower {request.max_tokens_param}, or top up at {TOPUP_URL}.",
                        code="insufficient_credits",
                        param=request.max_tokens_param,
                        extra={"affordable_output_tokens": afford},
                    ),
                )
            except WalletFrozen as exc:
                return _refuse(call, OpenAIError(403, str(exc), code="wallet_frozen"))
            call.hold = hold
    except KeyInactive as exc:
        # Revoked (or expired) since it was verified: nothing of this call stays.
        raise _key_invalid() from exc
    left = (hold.expires_at - timezone.now()).total_seconds() - SETTLE_MARGIN_SECONDS
    return Begun(call=call, spec=spec, request=request, max_tokens=max_tokens, deadline=time.monotonic() + left)


# --- finish -----------------------------------------------------------------------


def provider_error(err: ProviderError) -> OpenAIError:
    """A model call's failure in OpenAI's shape, with the status a client can act on."""
    if err.code == "rate_limited":
        return OpenAIError(429, err.message, code="rate_limit_exceeded", retry_after=err.retry_after or 1)
    if err.code == "timeout":
        return OpenAIError(504, err.message, code="upstream_timeout", type="server_error")
    if err.code == "provider_rejected" and err.status == 400:
        return OpenAIError(400, err.message, code="upstream_rejected")
    return OpenAIError(502, err.message, code=err.code, type="server_error")


def call_finish(
    *,
    begun: Begun,
    text: str,
    usage: Usage | None,
    finish_reason: str,
    disconnected: bool,
    failure: ProviderError | None,
) -> Finished:
    """Settle a call once: post the hold at the reported usage (estimated if the model did not
    report it), or void it when nothing was generated. Safe to call after the sweep failed it."""
    call, spec = begun.call, begun.spec
    if not text and (failure is not None or usage is None or disconnected):
        error = provider_error(failure) if failure else None
        code = failure.code if failure else ("client_disconnected" if disconnected else "empty_reply")
        message = failure.message if failure else "The reply ended before any text."
        _fail(call, code=code, message=message, error=error, status=ApiCall.Status.CANCELLED if disconnected else None)
        return Finished(status=ApiCall.Status.FAILED, usage=Usage(0, 0), cost=0, estimated=False, error=error)
    estimated = usage is None
    usage = usage or Usage(call.input_estimate, estimate_output_tokens(text))
    cost = reply_cost(
        call.prices or spec.prices_snapshot(), input_tokens=usage.input_tokens, output_tokens=usage.output_tokens
    )
    # Above the hold (an estimate that fell short), wallet_post charges the excess from
    # the available balance and records any shortfall: nothing is written off.
    status = ApiCall.Status.CANCELLED if disconnected else ApiCall.Status.DONE
    body = None
    if call.idempotency_key:
        body = shapes.completion(
            id=call.completion_id,
            created=int(call.created_at.timestamp()),
            model=spec.slug,
            text=text,
            finish_reason=finish_reason,
            usage=usage,
            panels={**begun.panels, "cost": cost, "usage_estimated": estimated},
        )
    memo = f"API, {spec.name}: {usage.input_tokens} in / {usage.output_tokens} out" + (
        " (estimated)" if estimated else ""
    )
    ended = {
        "status": status,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "usage_estimated": estimated,
        "cost": cost,
        "finish_reason": finish_reason[:20],
        "error_code": "client_disconnected" if disconnected else (failure.code[:40] if failure else ""),
        "error_message": (failure.message[:500] if failure else ""),
        "response_status": 200 if body is not None else None,
        "response_body": body,
        "reply": text if settings.API_STORE_CONTENT else "",
        "finished_at": timezone.now(),
    }
    if not _end_and_post(call, ended, cost=cost, memo=memo):
        # Not done in one statement (SQLite, a post above the hold, a call the sweep ended, an
        # expired hold): the transaction below tells those apart, by the same rules.
        try:
            with transaction.atomic():
                if not ApiCall.objects.filter(pk=call.pk, status=ApiCall.Status.STREAMING).update(**ended):
                    log.warning("API call ended elsewhere before it was settled", extra={"call_id": call.pk})
                    return Finished(status=ApiCall.Status.FAILED, usage=usage, cost=0, estimated=estimated)
                wallet_post(hold=call.hold, amount=cost, memo=memo)
        except HoldNotPending:
            error = OpenAIError(504, "The call ran past its time limit and was not billed.", code="expired")
            _fail(call, code="expired", message=error.message, error=error)
            return Finished(status=ApiCall.Status.FAILED, usage=usage, cost=0, estimated=estimated, error=error)
    log.info(
        "API call settled",
        extra={"call_id": call.pk, "cost": cost, "status": status, "estimated": estimated, "model": spec.slug},
    )
    return Finished(status=status, usage=usage, cost=cost, estimated=estimated)


# The call's end, for the ledger's post statement (ledger_sql.Along): the call's row is
# locked first (as the sweep's `_fail` locks it before the hold), and ends only with the post.
_END_FIRST = "SELECT id FROM openai_api_apicall WHERE id = %(c_id)s AND status = 'streaming' FOR UPDATE"
_END_THEN = """UPDATE openai_api_apicall SET status = %(c_status)s, input_tokens = %(c_input)s,
    output_tokens = %(c_output)s, reasoning_tokens = %(c_reasoning)s, usage_estimated = %(c_estimated)s,
    cost = %(c_cost)s, finish_reason = %(c_finish)s, error_code = %(c_code)s, error_message = %(c_message)s,
    response_status = %(c_response_status)s, response_body = %(c_body)s::jsonb, reply = %(c_reply)s,
    finished_at = %(c_finished)s
    FROM h WHERE openai_api_apicall.id = %(c_id)s RETURNING 1"""


def _end_and_post(call: ApiCall, ended: dict, *, cost: int, memo: str) -> bool:
    """The call's compare-and-swap and its post as one statement on PostgreSQL, committed
    with other callers' through the ledger's group commit; False if it could not be done
    that way (nothing changed then)."""
    if not ledger_sql.enabled() or call.hold is None:
        return False
    body = ended["response_body"]
    along = ledger_sql.Along(
        first=_END_FIRST,
        then=_END_THEN,
        params={
            "c_id": call.pk,
            "c_status": ended["status"],
            "c_input": ended["input_tokens"],
            "c_output": ended["output_tokens"],
            "c_reasoning": ended["reasoning_tokens"],
            "c_estimated": ended["usage_estimated"],
            "c_cost": ended["cost"],
            "c_finish": ended["finish_reason"],
            "c_code": ended["error_code"],
            "c_message": ended["error_message"],
            "c_response_status": ended["response_status"],
            "c_body": None if body is None else json.dumps(body, cls=DjangoJSONEncoder),
            "c_reply": ended["reply"],
            "c_finished": ended["finished_at"],
        },
    )
    return wallet_post_along_batched(hold=call.hold, amount=cost, along=along, memo=memo) is not None


def _fail(call: ApiCall, *, code: str, message: str, error: OpenAIError | None, status: str | None = None) -> bool:
    """End a call without charge and release its hold; False if it had already ended."""
    with transaction.atomic():
        failed = ApiCall.objects.filter(pk=call.pk, status=ApiCall.Status.STREAMING).update(
            status=status or ApiCall.Status.FAILED,
            cost=0,
            error_code=code[:40],
            error_message=message[:500],
            response_status=error.status if error else None,
            response_body=error.body() if error else None,
            # A failure before any text charged nothing: the key is freed so a retry runs again.
            idempotency_key="",
            finished_at=timezone.now(),
        )
        if failed and call.hold_id:
            wallet_void(hold=call.hold, reason=f"API call failed: {code}")
    return bool(failed)


# --- the sweep ----------------------------------------------------------------------


def calls_fail_stale(*, now: dt.datetime | None = None) -> int:
    """Fail every call still streaming after its hold's time limit: its web process died.
    The hold is voided, so nothing is charged; the Idempotency-Key is freed for a retry."""
    now = now or timezone.now()
    stale = ApiCall.objects.filter(status=ApiCall.Status.STREAMING, hold__expires_at__lte=now).select_related("hold")
    count = 0
    for call in stale:
        count += _fail(
            call,
            code="expired",
            message="The call stopped before it finished (the service restarted). Nothing was charged.",
            error=None,
        )
    return count


def idempotent_replies_forget(*, now: dt.datetime | None = None) -> int:
    """Drop replies kept for Idempotency-Key retries once API_IDEMPOTENCY_HOURS have passed."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(hours=settings.API_IDEMPOTENCY_HOURS)
    return (
        ApiCall.objects.filter(created_at__lt=cutoff)
        .exclude(idempotency_key="")
        .exclude(status=ApiCall.Status.STREAMING)
        .update(response_body=None, idempotency_key="")
    )
