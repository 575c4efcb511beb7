from __future__ import annotations

from django.apps import AppConfig


class OpenaiApiConfig(AppConfig):
    name = "openai_api"
    verbose_name = "OpenAI-compatible API"
    default_auto_field = "django.db.models.BigAutoField"
