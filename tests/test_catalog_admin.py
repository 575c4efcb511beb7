"""The catalog in the admin: an operator adds a self-hosted model and sees why a model is unavailable."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from chat.models import ModelSpec

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    admin = get_user_model().objects.create_superuser(username="ops", email="ops@example.com", password="x")
    client.force_login(admin)
    return client


def test_an_operator_adds_a_self_hosted_model_from_the_admin(admin_client):
    response = admin_client.post(
        "/admin/chat/modelspec/add/",
        {
            "slug": "vllm-qwen", "name": "Qwen (vLLM)", "provider": "Self-hosted", "tier": "other",
            "enabled": "on", "sort_order": "60", "api": "openai_compatible",
            "base_url": "http://10.0.0.5:8000/v1", "upstream_id": "Qwen/Qwen3-8B", "api_key_env": "",
            "input_price": "0", "output_price": "0", "price_tiers": "[]", "context_window": "32768",
            "max_output_tokens": "1024", "check_problem": "",
        },
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    spec = ModelSpec.objects.get(slug="vllm-qwen")
    assert spec.available and spec.api_key == "no-key" and spec.input_price == 0


def test_the_admin_says_why_a_model_is_unavailable(admin_client, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ModelSpec.objects.filter(slug="gpt-4o-mini").update(check_problem="")
    page = admin_client.get("/admin/chat/modelspec/").content.decode()
    assert "unavailable: OPENAI_API_KEY is not set" in page
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    ModelSpec.objects.filter(slug="gpt-4o").update(check_problem="OpenAI no longer lists gpt-4o-2024-11-20")
    page = admin_client.get("/admin/chat/modelspec/").content.decode()
    assert "unavailable: OpenAI no longer lists gpt-4o-2024-11-20" in page
