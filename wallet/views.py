from __future__ import annotations

import csv

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse

from wallet.autotopups import autotopup_for_user, autotopup_provider
from wallet.models import BalanceAlert, Entry
from wallet.selectors import entries_for_user, topups_for_user, wallet_summary
from wallet.services import credits_for_cents, credits_to_usd
from wallet.topups import topups_expire_stale


def entry_link(entry: Entry) -> str:
    """Where a ledger line came from: its reply in the chat, or its top-up."""
    kind, _, ident = entry.reference.partition(":")
    try:
        if kind == "message" and ident.isdigit():
            return reverse("message_goto", args=[int(ident)])
    except NoReverseMatch:
        return ""
    if kind == "topup" and ident.isdigit():
        return f"{reverse('wallet')}#topup-{ident}"
    return ""


@login_required
def wallet(request: HttpRequest) -> HttpResponse:
    account = request.user.wallet if hasattr(request.user, "wallet") else None
    topups_expire_stale(user=request.user)
    page = Paginator(entries_for_user(user=request.user), 25).get_page(request.GET.get("page"))
    rows = [
        {
            "entry": entry,
            "signed": entry.signed_amount_for(account),
            "usd": credits_to_usd(entry.signed_amount_for(account)),
            "link": entry_link(entry),
        }
        for entry in page
    ]
    autotopup = autotopup_for_user(user=request.user)
    provider, unavailable = autotopup_provider()
    return render(
        request,
        "wallet/wallet.html",
        {
            "autotopup": autotopup,
            "autotopup_provider": provider,
            "autotopup_unavailable": unavailable,
            "autotopup_credits": credits_for_cents(autotopup.amount_cents) if autotopup else 0,
            "autotopup_max_per_day": settings.AUTOTOPUP_MAX_PER_DAY,
            "summary": wallet_summary(user=request.user),
            "page": page,
            "rows": rows,
            "topups": topups_for_user(user=request.user)[:20],
            "topup_url": reverse("topup"),
            "alert": BalanceAlert.objects.filter(account__user=request.user).first(),
        },
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


@login_required
def wallet_export(request: HttpRequest) -> StreamingHttpResponse:
    account = getattr(request.user, "wallet", None)
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(["id", "date", "kind", "credits", "usd", "reference", "memo"])
        for entry in entries_for_user(user=request.user).iterator(chunk_size=1000):
            signed = entry.signed_amount_for(account)
            yield writer.writerow(
                [
                    entry.pk,
                    entry.created_at.isoformat(),
                    entry.kind,
                    signed,
                    f"{credits_to_usd(signed):.7f}",
                    entry.reference,
                    entry.memo,
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="panels-wallet.csv"'
    return response
