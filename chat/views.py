from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import mark_safe

from chat.markdown import render_markdown
from chat.models import Message, ModelSpec
from chat.routing import TIERS, tier_answerer
from chat.selectors import (
    conversation_cost,
    conversation_messages,
    conversations_for_user,
    get_conversation_for_user,
    get_message_for_user,
    models_catalog,
)
from chat.services import message_escalatable
from panels.money import credits_usd_text

AUTO = "auto"
IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"]
# A data URL is 4/3 of the file, and the whole JSON body must fit under Django's
# upload limit; leave room for the text and the JSON around it.
MAX_IMAGE_BYTES = min(5 * 1024 * 1024, (settings.DATA_UPLOAD_MAX_MEMORY_SIZE * 3) // 4 - 256 * 1024)
_DATA_IMAGE = re.compile(r"^data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+$")
IN_PROGRESS = {Message.Status.QUEUED, Message.Status.STREAMING}
# A failure's reason may already say so; the page adds "You were not charged." once.
_NOT_CHARGED = re.compile(r"[\s;,.]*\bnothing was charged\b[^.]*\.?", re.IGNORECASE)


def failure_reason(text: str) -> str:
    """A failed reply's reason, without its own word on charges: "This reply failed: <reason>."."""
    return _NOT_CHARGED.sub("", text or "").strip().rstrip(". ")


def route_line(routed_by: str) -> str:
    """Auto's reason as the page shows it: a typographic arrow, "Auto → GPT-4o mini: ..."."""
    return routed_by.replace(" -> ", " → ")


def _price(value: Decimal) -> str:
    """$0.15, $5.00, $0.075: at least two decimals, more only when the price has them."""
    text = f"{value.normalize():f}"
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def _usd(credits: int) -> str:
    return credits_usd_text(credits)


def model_options(models: list[ModelSpec]) -> list[dict[str, Any]]:
    """The dropdown: Auto first, then each model with its price per 1M tokens."""
    options = [
        {
            "value": AUTO,
            "label": "Auto — picks a cheap or flagship model for each message",
            "help": "Auto sends simple tasks to a cheap model and hard ones to the flagship; "
            "each reply shows which model answered and why.",
            "disabled": False,
        }
    ]
    for m in models:
        if m.check_problem:
            continue  # retired or refused by its provider (`models check`): not offered at all
        price = f"{_price(m.input_price)} in / {_price(m.output_price)} out per 1M tokens"
        name = f"{m.name} (demo)" if m.is_demo else m.name
        label = f"{name} — {price}"
        if m.available:
            help_text = f"{m.name} by {m.provider}: {price}."
            if m.is_demo:
                help_text += " The demo model answers with canned text; no provider is called."
            if m.image_input:
                help_text += " Reads images."
        else:
            # Never the operator's reason (a variable name): see ModelSpec.operator_reason.
            label += " — temporarily unavailable"
            help_text = f"{m.name} is temporarily unavailable."
        options.append({"value": m.slug, "label": label, "help": help_text, "disabled": not m.available})
    return options


def auto_image_support(models: list[ModelSpec]) -> dict[str, Any]:
    """Whether an image can go with Auto: only when the model of each tier reads images,
    so that attaching one never quietly moves a message to another model."""
    answerers = [(tier, tier_answerer(tier, models)) for tier in TIERS]
    blind = [(tier, m) for tier, m in answerers if m is not None and not m.image_input]
    if all(m is not None for _, m in answerers) and not blind:
        return {"allowed": True, "why": ""}
    if blind:
        tiers: dict[str, list[str]] = {}
        for tier, m in blind:
            tiers.setdefault(m.name, []).append(tier)
        names = " and ".join(
            f"{name} ({' and '.join(ts)} tier{'s' if len(ts) > 1 else ''})" for name, ts in tiers.items()
        )
        verb = "do" if len(tiers) > 1 else "does"
        why = f"Auto can't take images: {names} {verb} not read images. Pick a model that reads images to attach one."
    else:
        why = "Auto can't take images right now: no model is available for it. Pick a model that reads images."
    return {"allowed": False, "why": why}


def _attachment_urls(attachments: Any) -> list[str]:
    """Image data URLs of a user message, whatever shape each entry has; anything else is skipped."""
    urls = []
    for item in attachments or []:
        url = item if isinstance(item, str) else (item.get("url") or item.get("data_url") or "")
        if isinstance(item, dict) and isinstance(item.get("image_url"), dict):
            url = item["image_url"].get("url", "")
        if isinstance(url, str) and _DATA_IMAGE.match(url):
            urls.append(url)
    return urls


def _message_view(message: Message, *, escalatable: bool = False) -> dict[str, Any]:
    model = message.model
    in_progress = message.status in IN_PROGRESS
    return {
        "id": message.pk,
        "role": message.role,
        "status": message.status,
        "content": message.content,
        # Safe to mark: render_markdown escapes raw HTML and sanitises the result.
        "html": mark_safe(render_markdown(message.content))
        if message.role == Message.Role.ASSISTANT and not in_progress and message.content
        else "",
        "in_progress": in_progress,
        "attachments": _attachment_urls(message.attachments) if message.role == Message.Role.USER else [],
        "model_name": model.name if model else "the model",
        "routed_by": route_line(message.routed_by),
        # "Auto → GPT-4o mini: ..." already names the model; an older line does not.
        "route_names_model": message.routed_by.startswith(("Auto ", "Ask the flagship ")),
        "escalation_of": message.escalation_of_id,
        "escalatable": escalatable,
        "input_tokens": message.input_tokens,
        "output_tokens": message.output_tokens,
        "usage_estimated": message.usage_estimated,
        "cost": message.cost,
        "cost_usd": _usd(message.cost) if message.cost is not None else "",
        # Shown as "This reply failed: <reason>. You were not charged." (or as a note on a
        # settled reply, e.g. usage billed on an estimate).
        "error_code": message.error_code,
        "error": failure_reason(message.error_message)
        if message.status == Message.Status.FAILED
        else message.error_message.rstrip(". "),
    }


@login_required
def chat(request: HttpRequest, conversation_id: int | None = None) -> HttpResponse:
    conversation = None
    messages: list[Message] = []
    if conversation_id is not None:
        conversation = get_conversation_for_user(user=request.user, conversation_id=conversation_id)
        messages = list(
            conversation_messages(conversation=conversation).prefetch_related(
                Prefetch("retries", queryset=Message.objects.only("id", "retry_of_id"))
            )
        )
    # A failed reply that was retried is replaced by its retry.
    shown = [m for m in messages if not (m.status == Message.Status.FAILED and m.retries.all())]
    escalated = {m.escalation_of_id for m in messages if m.escalation_of_id}
    models = list(models_catalog())
    options = model_options(models)
    choices = {o["value"] for o in options if not o["disabled"]}
    # The choice is remembered per conversation: what was picked for its last message.
    last_pick = next((m.requested_model for m in reversed(messages) if m.requested_model), "")
    initial_model = last_pick if last_pick in choices else AUTO

    topup_url = _topup_url()
    conversation_url = reverse("chat_conversation", args=[0]).replace("/0/", "/{id}/")
    config = {
        "conversation_id": conversation.pk if conversation else None,
        "conversation_cost": conversation_cost(conversation=conversation) if conversation else 0,
        "api_base": "/api/v1/",
        "conversation_url": conversation_url,
        "new_chat_url": reverse("chat"),
        "topup_url": topup_url,
        "csrf_token": get_token(request),
        "credits_per_usd": settings.CREDITS_PER_USD,
        "initial_model": initial_model,
        "max_image_bytes": MAX_IMAGE_BYTES,
        "image_types": IMAGE_TYPES,
        "auto_images": auto_image_support(models),
        "models": [
            {
                "slug": m.slug,
                "name": m.name,
                "available": m.available,
                "image_input": m.image_input,
                "is_demo": m.is_demo,
            }
            for m in models
        ],
    }
    conversations = [
        {
            "id": c.pk,
            "title": c.title,
            "url": reverse("chat_conversation", args=[c.pk]),
            "current": c == conversation,
            "running": c.running,
        }
        for c in conversations_for_user(user=request.user)[:200]
    ]
    return render(
        request,
        "chat/chat.html",
        {
            "conversation": conversation,
            "conversation_cost": conversation_cost(conversation=conversation) if conversation else 0,
            "conversations": conversations,
            "blank_item": {"id": "", "title": "", "url": "", "current": False},
            "chat_messages": [
                _message_view(m, escalatable=m.pk not in escalated and message_escalatable(m)) for m in shown
            ],
            "model_options": options,
            "initial_model": initial_model,
            "image_accept": ",".join(IMAGE_TYPES),
            "topup_url": topup_url,
            "chat_config": config,
        },
    )


@login_required
def message_goto(request: HttpRequest, message_id: int) -> HttpResponse:
    """A ledger line's link: the reply in its conversation (another user's id is a 404)."""
    message = get_message_for_user(user=request.user, message_id=message_id)
    return HttpResponseRedirect(f"{reverse('chat_conversation', args=[message.conversation_id])}#message-{message.pk}")


def _topup_url() -> str:
    try:
        return reverse("topup")
    except NoReverseMatch:
        return "/wallet/topup/"
