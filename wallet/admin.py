from __future__ import annotations

import uuid

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import format_html

from wallet.models import Account, AutoTopup, Entry, Hold, Shortfall, StripeEvent, Topup
from wallet.services import wallet_grant
from wallet.topups import topup_resolve_freeze


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class GrantForm(forms.Form):
    credits = forms.IntegerField(help_text="Positive to grant, negative to take back.")
    reason = forms.CharField(max_length=300, help_text="Required; recorded on the ledger entry.")
    key = forms.CharField(widget=forms.HiddenInput)

    def clean_credits(self) -> int:
        value = self.cleaned_data["credits"]
        if value == 0:
            raise forms.ValidationError("Enter a non-zero number of credits.")
        return value


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "user", "code", "balance", "held", "frozen_reason", "actions_link"]
    list_filter = ["kind"]
    search_fields = ["user__email", "code"]
    readonly_fields = ["kind", "user", "code", "balance", "held", "frozen_reason", "created_at"]

    @admin.display(description="Operator")
    def actions_link(self, obj: Account) -> str:
        if obj.kind != Account.Kind.USER:
            return "-"
        return format_html('<a href="{}">Grant / adjust</a>', reverse("admin:wallet_account_grant", args=[obj.pk]))

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.is_staff

    def get_urls(self) -> list:
        extra = [
            path("<int:pk>/grant/", self.admin_site.admin_view(self.grant_view), name="wallet_account_grant"),
            path("<int:pk>/unfreeze/", self.admin_site.admin_view(self.unfreeze_view), name="wallet_account_unfreeze"),
        ]
        return extra + super().get_urls()

    def grant_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not request.user.has_perm("wallet.change_account") and not request.user.is_superuser:
            return HttpResponse(status=403)
        account = get_object_or_404(Account, pk=pk, kind=Account.Kind.USER)
        form = GrantForm(request.POST or None, initial={"key": uuid.uuid4().hex})
        if request.method == "POST" and form.is_valid():
            try:
                wallet_grant(
                    account=account,
                    amount=form.cleaned_data["credits"],
                    reason=form.cleaned_data["reason"],
                    actor=request.user.get_username(),
                    idempotency_key=f"admin-grant:{form.cleaned_data['key']}",
                )
            except Exception as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Recorded {form.cleaned_data['credits']:+,} credits for {account}.")
                return redirect("admin:wallet_account_changelist")
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "account": account,
            "title": "Grant or adjust",
        }
        return render(request, "admin/wallet/grant.html", context)

    def unfreeze_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = get_object_or_404(Account, pk=pk, kind=Account.Kind.USER)
        if request.method == "POST" and request.user.is_superuser:
            topup_resolve_freeze(account=account, actor=request.user.get_username())
            messages.success(request, f"{account} unfrozen.")
        return redirect("admin:wallet_account_changelist")


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "kind", "debit_account", "credit_account", "amount", "reference", "memo"]
    list_filter = ["kind"]
    search_fields = ["reference", "idempotency_key", "memo"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["id", "account", "amount", "status", "posted_amount", "reference", "expires_at"]
    list_filter = ["status"]


@admin.register(Shortfall)
class ShortfallAdmin(ReadOnlyAdmin):
    list_display = ["id", "account", "amount", "reference", "created_at", "resolved_at"]


@admin.register(Topup)
class TopupAdmin(ReadOnlyAdmin):
    list_display = [
        "id", "user", "provider", "kind", "amount_cents", "credits", "status", "checkout_session_id", "created_at"
    ]  # fmt: skip
    list_filter = ["status", "provider", "kind"]
    search_fields = ["user__email", "checkout_session_id", "payment_intent_id", "charge_id"]


@admin.register(AutoTopup)
class AutoTopupAdmin(ReadOnlyAdmin):
    list_display = ["account", "enabled", "threshold", "amount_cents", "provider", "card_last4", "paused_at"]
    list_filter = ["enabled", "provider"]
    search_fields = ["account__user__email", "customer_id", "payment_method_id"]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "type", "received_at", "processed_at", "outcome"]
    search_fields = ["event_id", "type"]
