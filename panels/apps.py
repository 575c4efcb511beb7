from __future__ import annotations

from django.apps import AppConfig


class PanelsConfig(AppConfig):
    name = "panels"

    def ready(self) -> None:
        from panels import schema  # noqa: F401  (registers the Bearer key scheme)
