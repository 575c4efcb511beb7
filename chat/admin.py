from __future__ import annotations

from django.contrib import admin

from chat.models import ModelSpec


@admin.register(ModelSpec)
class ModelSpecAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "provider", "input_price", "output_price", "context_window", "tier", "enabled"]
    list_editable = ["input_price", "output_price", "enabled"]
    list_filter = ["provider", "tier", "enabled"]
