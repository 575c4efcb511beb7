from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chat.models import ModelSpec


@login_required
def chat(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/chat.html", {"models": ModelSpec.objects.filter(enabled=True)})


def pricing(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/pricing.html", {"models": ModelSpec.objects.filter(enabled=True)})
