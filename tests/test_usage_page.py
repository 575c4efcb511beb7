"""/usage/: spend and tokens by model and day, Auto's tier shares and what Auto saved,
checked against figures worked out by hand from the catalog's prices."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.utils import timezone

from chat.models import Conversation, Message, ModelSpec
from chat.usage import usage_report


def reply(user, slug, *, input_tokens, output_tokens, cost, auto=True, days_ago=0, status="done", **extra):
    conversation = Conversation.objects.filter(user=user).first() or Conversation.objects.create(user=user)
    return Message.objects.create(
        conversation=conversation,
        role="assistant",
        status=status,
        model=ModelSpec.objects.get(slug=slug),
        requested_model="auto" if auto else slug,
        routed_by=f"Auto -> {slug}: test" if auto else "",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=cost,
        created_at=timezone.now() - dt.timedelta(days=days_ago),
        **extra,
    )


def day(days_ago: int) -> str:
    return (timezone.localdate() - dt.timedelta(days=days_ago)).isoformat()


def row(html: str, attr: str, value: str) -> list[str]:
    match = re.search(rf'<tr {attr}="{re.escape(value)}">(.*?)</tr>', html)
    assert match, (attr, value)
    return [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", match.group(1))]


@pytest.fixture(autouse=True)
def _flagship_at_five_and_fifteen(db):
    # The figures below were worked out by hand at GPT-4o's $5 / $15 (the catalog now lists $2.50 / $10).
    ModelSpec.objects.filter(slug="gpt-4o").update(input_price=5, output_price=15)


@pytest.fixture
def month(alice, bob):
    # 1,000 in / 500 out on GPT-4o mini: (1,000 x 0.15 + 500 x 0.60) x 2 = 900 credits.
    reply(alice, "gpt-4o-mini", input_tokens=1_000, output_tokens=500, cost=900, days_ago=0)
    # 2,000 in / 1,000 out on GPT-4o: (2,000 x 5 + 1,000 x 15) x 2 = 50,000 credits.
    reply(alice, "gpt-4o", input_tokens=2_000, output_tokens=1_000, cost=50_000, days_ago=3)
    # Picked by hand, not Auto: spend, but not in Auto's shares or savings. 300 credits.
    reply(alice, "gpt-4o-mini", input_tokens=400, output_tokens=150, cost=300, auto=False, days_ago=3)
    # Not counted: failed (nothing charged), older than 30 days, and another user's.
    reply(alice, "gpt-4o-mini", input_tokens=0, output_tokens=0, cost=0, status="failed")
    reply(alice, "gpt-4o-mini", input_tokens=9_000, output_tokens=9_000, cost=13_500, days_ago=31)
    reply(bob, "gpt-4o-mini", input_tokens=7_777, output_tokens=7_777, cost=11_666)
    reply(bob, "gpt-4o", input_tokens=7_777, output_tokens=7_777, cost=311_080, days_ago=3)


def test_one_cheap_auto_reply_saved_what_the_flagship_would_have_cost(alice_client, alice):
    reply(alice, "gpt-4o-mini", input_tokens=1_000, output_tokens=500, cost=900)
    savings = usage_report(user=alice).savings
    # At GPT-4o's rates: (1,000 x 5 + 500 x 15) x 2 = 25,000 credits; saved 25,000 - 900 = 24,100 = $0.01205.
    assert (savings.actual_credits, savings.flagship_credits, savings.saved_credits) == (900, 25_000, 24_100)
    assert savings.saved_usd == Decimal("0.01205")
    assert savings.saved_percent == Decimal("96.4")
    html = alice_client.get("/usage/").content.decode()
    assert (
        '<strong id="usage-saved-credits">24,100</strong> credits <span class="muted">$0.01205 · 96.4%</span>' in html
    )
    assert "<dd>900 credits ($0.00045)</dd>" in html
    assert "<dt>The same tokens on GPT-4o</dt><dd>25,000 credits ($0.0125)</dd>" in html
    assert "<strong>24,100 credits ($0.01205)</strong>, 96.4%" in html


def test_spend_by_model_and_day_tier_shares_and_savings(alice_client, alice, month):
    response = alice_client.get("/usage/")
    assert response.status_code == 200
    html = response.content.decode()
    # Totals: 900 + 50,000 + 300 = 51,200 credits = $0.0256; 3 replies; 3,400 in + 1,650 out tokens.
    assert '<strong id="usage-total-credits">51,200</strong> credits <span class="muted">$0.0256</span>' in html
    assert '<strong>5,050</strong> <span class="muted">3,400 in / 1,650 out</span>' in html
    # By model, most spent first.
    assert row(html, "data-model", "gpt-4o") == ["GPT-4o", "1", "2,000", "1,000", "50,000", "$0.025"]
    assert row(html, "data-model", "gpt-4o-mini") == ["GPT-4o mini", "2", "1,400", "650", "1,200", "$0.0006"]
    assert html.index('data-model="gpt-4o"') < html.index('data-model="gpt-4o-mini"')
    # By day.
    assert row(html, "data-day", day(0)) == [
        (timezone.localdate()).strftime("%a %-d %b"),
        "1",
        "1,000",
        "500",
        "900",
        "$0.00045",
    ]
    assert row(html, "data-day", day(3))[1:] == ["2", "2,400", "1,150", "50,300", "$0.02515"]
    assert html.count("<tr data-day=") == 2
    # Auto's shares: one reply on each tier.
    assert '<li data-tier="cheap">' in html and "Cheap tier: 50.0%" in html and "Flagship: 50.0%" in html
    # Savings, by hand: Auto's replies cost 900 + 50,000 = 50,900 credits; at GPT-4o's rates
    # 25,000 + 50,000 = 75,000; saved 24,100 credits ($0.01205), 24,100 / 75,000 = 32.1%.
    assert "<dd>50,900 credits ($0.02545)</dd>" in html
    assert "<dd>75,000 credits ($0.0375)</dd>" in html
    assert "<strong>24,100 credits ($0.01205)</strong>, 32.1%" in html


def test_the_charts_are_inline_svg_with_a_bar_per_model_and_day(alice_client, alice, month):
    html = alice_client.get("/usage/").content.decode()
    spend = html[html.index('aria-labelledby="spend-caption"') : html.index("</svg>", html.index("spend-caption"))]
    titles = re.findall(r"<title>(.*?)</title>", spend)
    assert len(titles) == 3  # today: mini; three days ago: GPT-4o and mini stacked
    assert any(t.endswith("GPT-4o, 50,000 credits ($0.025)") for t in titles)
    # The busiest day (50,300 credits) reaches the top line; nothing is drawn outside the chart.
    columns: dict[str, float] = {}
    for x, y, height in re.findall(r'x="([\d.]+)" y="([\d.]+)" width="7" height="([\d.]+)"', spend):
        columns[x] = columns.get(x, 0) + float(height)
        assert float(y) >= 0
    assert len(columns) == 2
    # 100 high with 4 of headroom; a sliver (300 credits) is drawn at least 0.8 high.
    assert max(columns.values()) == pytest.approx(96, abs=0.3)
    assert "busiest day, 50,300 credits ($0.02515)" in html
    assert "<script" not in html[html.index("<main") : html.index("</main>")]
    assert "http" not in html[html.index("<svg") : html.rindex("</svg>")].replace("http://www.w3.org", "")


def test_another_users_messages_are_never_counted(client, bob, alice, month):
    client.force_login(bob)
    html = client.get("/usage/").content.decode()
    # Bob: 11,666 + 311,080 = 322,746 credits; nothing of alice's.
    assert '<strong id="usage-total-credits">322,746</strong>' in html
    assert row(html, "data-model", "gpt-4o-mini")[1:5] == ["1", "7,777", "7,777", "11,666"]
    report = usage_report(user=alice)
    assert report.total.credits == 51_200 and report.total.messages == 3


def test_demo_fallbacks_show_as_their_own_share(alice_client, alice):
    reply(alice, "demo", input_tokens=100, output_tokens=100, cost=150)
    reply(alice, "gpt-4o-mini", input_tokens=100, output_tokens=100, cost=150)
    reply(alice, "gpt-4o-mini", input_tokens=100, output_tokens=100, cost=150)
    html = alice_client.get("/usage/").content.decode()
    assert "Cheap tier: 66.7%" in html and "Demo model: 33.3%" in html
    assert "Flagship:" not in html


def test_without_auto_there_are_no_savings_but_a_pointer_to_it(alice_client, alice):
    reply(alice, "gpt-4o", input_tokens=10, output_tokens=10, cost=400, auto=False)
    html = alice_client.get("/usage/").content.decode()
    assert 'id="auto-savings"' not in html
    assert "You have not used Auto in these 30 days." in html


def test_empty_state_points_to_the_chat(alice_client, alice):
    html = alice_client.get("/usage/").content.decode()
    assert 'id="usage-empty"' in html
    assert "No replies in the last 30 days." in html
    assert '<a class="button" href="/chat/">Open the chat</a>' in html
    assert "<svg" not in html


def test_login_required(client, db):
    response = client.get("/usage/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_linked_from_the_header_and_the_wallet_page(alice_client):
    html = alice_client.get("/wallet/").content.decode()
    header = html[html.index('<header class="site-header">') : html.index("</header>")]
    assert '<a href="/usage/">Usage</a>' in header
    main = html[html.index("<main") :]
    assert '<a href="/usage/">Usage by model and day, and what Auto saved</a>' in main
