from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_home_month_table_comes_from_the_live_catalog(client):
    body = client.get("/").content.decode()
    # 500 tasks of 1,600 in + 500 out: GPT-4o $4.50, GPT-4o mini $0.27, Auto (80% cheap) $1.12.
    assert "<td>$4.50</td><td>$0.27</td><td>$1.12</td><td>$20.00</td>" in body


def test_home_month_table_follows_a_price_change(client):
    from chat.models import ModelSpec

    ModelSpec.objects.filter(slug="gpt-4o").update(input_price="5.00", output_price="15.00")
    body = client.get("/").content.decode()
    # 500 x (1,600 x 5.00 + 500 x 15.00) / 1e6 = $7.75
    assert "<td>$7.75</td>" in body
