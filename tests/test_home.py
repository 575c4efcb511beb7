from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_home_month_table_comes_from_the_live_catalog(client):
    body = client.get("/").content.decode()
    # 500 tasks of 1,600 in + 500 out: GPT-4o $7.75, GPT-4o mini $0.27, Auto (80% cheap) $1.77.
    assert "<td>$7.75</td><td>$0.27</td><td>$1.77</td><td>$20.00</td>" in body


def test_home_month_table_follows_a_price_change(client):
    from chat.models import ModelSpec

    ModelSpec.objects.filter(slug="gpt-4o").update(input_price="2.50", output_price="10.00")
    body = client.get("/").content.decode()
    # 500 x (1,600 x 2.50 + 500 x 10.00) / 1e6 = $4.50
    assert "<td>$4.50</td>" in body
