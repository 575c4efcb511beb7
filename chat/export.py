"""A conversation as a file: Markdown to read, JSON to keep or load elsewhere.

Only the conversation as it reads now (messages replaced by an edit or a regenerated
reply are left out, as on the page); its cost counts every reply it paid for.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.utils import timezone

from chat.models import Conversation, Message
from panels.money import credits_usd_text
from wallet.services import credits_to_usd

FORMATS = {"markdown": ("text/markdown; charset=utf-8", "md"), "json": ("application/json", "json")}


def export_filename(conversation: Conversation, extension: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", (conversation.title or "conversation").lower()).strip("-")[:50]
    return f"panels-{conversation.pk}-{slug or 'conversation'}.{extension}"


def _when(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if moment else None


def conversation_json(*, conversation: Conversation, messages: list[Message], cost: int) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "title": conversation.title,
        "system_prompt": conversation.system_prompt,
        "temperature": float(conversation.temperature) if conversation.temperature is not None else None,
        "created_at": _when(conversation.created_at),
        "exported_at": _when(timezone.now()),
        "cost": {"credits": cost, "usd": str(credits_to_usd(cost))},
        "messages": [
            {
                "id": m.pk,
                "role": m.role,
                "content": m.content,
                "attachments": m.attachments,
                "status": m.status,
                "model": m.model.slug if m.model_id else None,
                "model_name": m.model.name if m.model_id else None,
                "routed_by": m.routed_by,
                "input_tokens": m.input_tokens,
                "output_tokens": m.output_tokens,
                "usage_estimated": m.usage_estimated,
                "cost": m.cost,
                "error": {"code": m.error_code, "message": m.error_message} if m.error_code else None,
                "created_at": _when(m.created_at),
            }
            for m in messages
        ],
    }


def conversation_markdown(*, conversation: Conversation, messages: list[Message], cost: int) -> str:
    lines = [f"# {conversation.title or 'Conversation'}", ""]
    lines.append(
        f"Exported from Panels on {timezone.now().astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC. "
        f"Cost so far: {cost:,} credits ({credits_usd_text(cost)})."
    )
    if conversation.system_prompt:
        lines += ["", "**System prompt:**", "", *(f"> {line}" for line in conversation.system_prompt.splitlines())]
    if conversation.temperature is not None:
        lines += ["", f"**Temperature:** {conversation.temperature.normalize():f}"]
    for m in messages:
        lines.append("")
        if m.role == Message.Role.USER:
            lines += ["## You", "", m.content]
            if m.attachments:
                count = len(m.attachments)
                lines += ["", f"*({count} image{'s' if count > 1 else ''} attached)*"]
            continue
        lines += [f"## {m.model.name if m.model_id else 'Reply'}", ""]
        if m.status == Message.Status.FAILED:
            lines.append(f"*This reply failed: {m.error_message}*")
            continue
        lines.append(m.content or "*(no text)*")
        meta = []
        if m.input_tokens is not None:
            meta.append(f"{m.input_tokens:,} in / {m.output_tokens or 0:,} out tokens")
        if m.cost is not None:
            meta.append(f"{m.cost:,} credits ({credits_usd_text(m.cost)})")
        if m.status == Message.Status.CANCELLED:
            meta.append("stopped")
        if meta:
            lines += ["", f"*{' · '.join(meta)}*"]
    return "\n".join(lines) + "\n"
