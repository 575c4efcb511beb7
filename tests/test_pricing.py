"""The pricing page's calculator: monthly_costs against PRODUCT.md's volume table, the page
with and without GET parameters, its errors, and pricing.js giving the server's numbers."""

from __future__ import annotations

import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal

import pytest

from chat.catalog import DEFAULT_CATALOG
from chat.models import ModelSpec
from chat.pricing import (
    DEFAULT_CHEAP_SHARE,
    DEFAULT_INPUT_TOKENS,
    DEFAULT_OUTPUT_TOKENS,
    TierPrices,
    format_usd,
    monthly_costs,
)
from tests.browser import launch_chromium

PRICES = {entry["slug"]: entry for entry in DEFAULT_CATALOG}
CHEAP = TierPrices("GPT-4o mini", PRICES["gpt-4o-mini"]["input_price"], PRICES["gpt-4o-mini"]["output_price"])
FLAGSHIP = TierPrices("GPT-4o", PRICES["gpt-4o"]["input_price"], PRICES["gpt-4o"]["output_price"])


def default_month(tasks: int, **overrides):
    mix = {
        "input_tokens": DEFAULT_INPUT_TOKENS,
        "output_tokens": DEFAULT_OUTPUT_TOKENS,
        "cheap_share": DEFAULT_CHEAP_SHARE,
        **overrides,
    }
    return monthly_costs(tasks_per_month=tasks, cheap=CHEAP, flagship=FLAGSHIP, **mix)


# --- monthly_costs --------------------------------------------------------------------


def test_the_default_mix_and_prices_are_product_mds():
    assert (DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS, DEFAULT_CHEAP_SHARE) == (1_600, 500, 80)
    assert (CHEAP.input_price, CHEAP.output_price) == (Decimal("0.15"), Decimal("0.60"))
    # November 2026 list prices from genai-prices: the `gpt-4o` alias at $2.50 / $10.
    assert (FLAGSHIP.input_price, FLAGSHIP.output_price) == (Decimal("2.5"), Decimal("10"))


@pytest.mark.parametrize(
    ("tasks", "flagship", "cheap", "auto"),
    [
        # By hand, per task: flagship (1,600 x $2.50 + 500 x $10) / 1M = $0.009;
        # cheap (1,600 x $0.15 + 500 x $0.60) / 1M = $0.00054; Auto 0.8 x 0.00054 + 0.2 x 0.009 = $0.002232.
        (500, "4.50", "0.27", "1.116"),
        (2_000, "18.00", "1.08", "4.464"),
        (10_000, "90.00", "5.40", "22.32"),
    ],
)
def test_monthly_costs_exactly(tasks, flagship, cheap, auto):
    costs = default_month(tasks)
    assert (costs.flagship_only, costs.cheap_only, costs.auto) == (Decimal(flagship), Decimal(cheap), Decimal(auto))
    assert costs.flat == Decimal(20)


# PRODUCT.md: the seed's volume table ($5 / $15 GPT-4o) is history and can't be reproduced from its
# own price list; the calculator, fed by the catalog, is the reference. What still holds:
# "The cheap tier costs a few percent of the flagship per token."
def test_the_cheap_tier_costs_a_few_percent_of_the_flagship_per_token():
    for input_tokens, output_tokens in ((1, 0), (0, 1), (1_600, 500), (100, 5_000), (50_000, 10)):
        costs = default_month(500, input_tokens=input_tokens, output_tokens=output_tokens)
        assert Decimal("0.03") <= costs.cheap_only / costs.flagship_only <= Decimal("0.07")


def test_auto_is_the_share_weighted_mix_of_the_tiers():
    assert default_month(500, cheap_share=100).auto == default_month(500).cheap_only
    assert default_month(500, cheap_share=0).auto == default_month(500).flagship_only
    # 1,000 in / 500 out: cheap $0.00045, flagship $0.0075 a task; 90% cheap -> $0.001155 a task.
    assert default_month(2_000, input_tokens=1_000, output_tokens=500, cheap_share=90).auto == Decimal("2.31")


def test_monthly_costs_refuses_nonsense():
    with pytest.raises(ValueError):
        default_month(500, cheap_share=101)
    with pytest.raises(ValueError):
        default_month(-1)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0", "$0.00"),
        ("0.004", "under $0.01"),
        ("0.005", "$0.01"),
        ("0.225", "$0.23"),
        ("1.766", "$1.77"),
        ("12345.675", "$12,345.68"),
    ],
)
def test_format_usd_rounds_half_up_to_the_cent(value, text):
    assert format_usd(Decimal(value)) == text


# --- the page -----------------------------------------------------------------------


def cards(html: str) -> dict[str, str]:
    block = html[html.index('id="cost-cards"') : html.index("</ul>", html.index('id="cost-cards"'))]
    return dict(re.findall(r'data-cost="(\w+)">([^<]+)<', block))


def reference_rows(html: str) -> dict[str, dict[str, str]]:
    rows = re.findall(r'<tr data-tasks="(\d+)">(.*?)</tr>', html)
    return {tasks: dict(re.findall(r'data-cost="(\w+)">([^<]+)<', cells)) for tasks, cells in rows}


def test_the_page_is_public_and_shows_the_catalog_and_the_default_calculation(client, db):
    response = client.get("/pricing/")
    assert response.status_code == 200
    html = response.content.decode()
    # The catalog with its prices.
    assert '<th scope="row">GPT-4o</th>' in html and "<td>$2.50</td>" in html and "<td>$10.00</td>" in html
    assert "<td>$0.15</td>" in html and "<td>$0.60</td>" in html
    # The form, filled with the default mix, each input with its label and error slot.
    for name, value in (("tasks", 500), ("input_tokens", 1600), ("output_tokens", 500), ("cheap_share", 80)):
        assert f'<label for="id_{name}">' in html
        assert re.search(
            rf'<input type="number" name="{name}" value="{value}"[^>]*aria-describedby="id_{name}_error"', html
        )
    assert 'method="get"' in html
    assert cards(html) == {"flagship": "$4.50", "cheap": "$0.27", "auto": "$1.12", "flat": "$20.00"}
    assert "<strong data-verdict-amount>$18.88</strong> <span data-verdict-word>less</span>" in html
    assert reference_rows(html) == {
        "500": {"flagship": "$4.50", "cheap": "$0.27", "auto": "$1.12", "flat": "$20.00"},
        "2000": {"flagship": "$18.00", "cheap": "$1.08", "auto": "$4.46", "flat": "$20.00"},
        "10000": {"flagship": "$90.00", "cheap": "$5.40", "auto": "$22.32", "flat": "$20.00"},
    }
    # Live recomputation is a separate script fed by json_script; no inline script.
    assert '<script id="pricing-config" type="application/json">' in html
    assert '"flagship": {"name": "GPT-4o", "input_e4": 25000, "output_e4": 100000}' in html
    assert re.search(r'<script src="/static/js/pricing\.js" defer></script>', html)
    assert len(re.findall(r"<script(?![^>]*(?:src=|application/json))", html)) == 0


def test_the_page_recomputes_from_get_parameters(client, db):
    html = client.get("/pricing/?tasks=2000&input_tokens=1000&output_tokens=500&cheap_share=90").content.decode()
    # By hand: flagship 2,000 x $0.0075 = $15; cheap 2,000 x $0.00045 = $0.90;
    # Auto 2,000 x (0.9 x 0.00045 + 0.1 x 0.0075) = $2.31.
    assert cards(html) == {"flagship": "$15.00", "cheap": "$0.90", "auto": "$2.31", "flat": "$20.00"}
    assert '<input type="number" name="tasks" value="2000"' in html
    # The reference rows follow the mix asked for: 500 tasks -> $3.75, $0.225 -> $0.23, $0.5775 -> $0.58.
    assert reference_rows(html)["500"] == {"flagship": "$3.75", "cheap": "$0.23", "auto": "$0.58", "flat": "$20.00"}
    assert "<span data-mix-input>1,000</span>" in html


def test_the_page_uses_the_live_catalog(client, db, settings):
    ModelSpec.objects.filter(slug="gpt-4o").update(input_price=Decimal("5.00"), output_price=Decimal("15.00"))
    html = client.get("/pricing/").content.decode()
    # 500 x (1,600 x $5 + 500 x $15) / 1M = $7.75
    assert cards(html)["flagship"] == "$7.75"
    settings.AUTO_FLAGSHIP_MODEL = "claude-sonnet"
    html = client.get("/pricing/").content.decode()
    # 500 x (1,600 x $2 + 500 x $10) / 1M = $4.10
    assert cards(html)["flagship"] == "$4.10" and "(Claude Sonnet)" in html


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("tasks=abc", "tasks", "Enter a whole number of tasks from 1 to 1,000,000."),
        ("tasks=0", "tasks", "Enter a whole number of tasks from 1 to 1,000,000."),
        ("tasks=2.5", "tasks", "Enter a whole number of tasks from 1 to 1,000,000."),
        ("input_tokens=-3", "input_tokens", "Enter a whole number of input tokens from 0 to 1,000,000."),
        ("output_tokens=100001", "output_tokens", "Enter a whole number of output tokens from 0 to 100,000."),
        ("cheap_share=150", "cheap_share", "Enter a percentage from 0 to 100."),
        ("cheap_share=", "cheap_share", "Enter a percentage from 0 to 100."),
        ("input_tokens=0&output_tokens=0", "output_tokens", "A task uses at least one token"),
    ],
)
def test_bad_inputs_show_a_clear_error_next_to_their_field(client, db, query, field, message):
    defaults = {"tasks": "500", "input_tokens": "1600", "output_tokens": "500", "cheap_share": "80"}
    given = dict(part.split("=", 1) for part in query.split("&"))
    params = "&".join(f"{k}={v}" for k, v in {**defaults, **given}.items())
    response = client.get(f"/pricing/?{params}")
    assert response.status_code == 200
    html = response.content.decode()
    field_html = html[html.index(f'<label for="id_{field}">') :]
    field_html = field_html[: field_html.index("</div>")]
    assert f'<p class="field-error" id="id_{field}_error">{message}' in field_html
    assert 'aria-invalid="true"' in field_html
    assert '<ul class="cost-cards" id="cost-cards" hidden>' in html
    assert '<p class="alert error" id="calc-invalid">' in html
    # The reference table still shows, on the default mix.
    assert reference_rows(html)["500"]["auto"] == "$1.12"


def test_without_a_tier_model_the_calculator_says_what_is_missing(client, db):
    ModelSpec.objects.filter(tier="flagship").update(enabled=False)
    html = client.get("/pricing/").content.decode()
    assert "The calculator needs a cheap-tier and a flagship model in the catalog." in html
    assert "pricing.js" not in html


# --- pricing.js: the same numbers in a browser ----------------------------------------------


@pytest.fixture
def page(live_server, transactional_db) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.set_default_timeout(10_000)
        page.problems = []
        page.on("console", lambda msg: page.problems.append(msg.text) if msg.type in ("error", "warning") else None)
        page.on("pageerror", lambda exc: page.problems.append(str(exc)))
        try:
            yield page
        finally:
            browser.close()


def shown(page) -> dict[str, str]:
    return {key: page.locator(f'#cost-cards [data-cost="{key}"]').inner_text() for key in ("flagship", "cheap", "auto")}


@pytest.mark.browser
def test_pricing_js_recomputes_live_with_the_servers_numbers(page, live_server):
    mixes = [
        {"tasks": "2000", "input_tokens": "1000", "output_tokens": "500", "cheap_share": "90"},
        {"tasks": "1", "input_tokens": "3", "output_tokens": "0", "cheap_share": "50"},
        {"tasks": "987654", "input_tokens": "123457", "output_tokens": "99999", "cheap_share": "37"},
    ]
    page.goto(live_server.url + "/pricing/")
    assert shown(page)["auto"] == "$1.12"
    for mix in mixes:
        for name, value in mix.items():
            page.locator(f"#id_{name}").fill(value)
        # Over HTTP from the live server: the ORM may not run in Playwright's thread.
        with urllib.request.urlopen(f"{live_server.url}/pricing/?{urllib.parse.urlencode(mix)}") as response:
            server = response.read().decode()
        assert shown(page) == {k: v for k, v in cards(server).items() if k != "flat"}, mix
        for tasks, row in reference_rows(server).items():
            for key, value in row.items():
                assert page.locator(f'tr[data-tasks="{tasks}"] [data-cost="{key}"]').inner_text() == value
    page.get_by_label("Share on the cheap tier (%)").fill("150")
    assert page.locator("#id_cheap_share_error").inner_text() == "Enter a percentage from 0 to 100."
    assert page.locator("#cost-cards").is_hidden()
    page.get_by_label("Share on the cheap tier (%)").fill("80")
    assert page.locator("#id_cheap_share_error").is_hidden() and page.locator("#cost-cards").is_visible()
    assert page.problems == []
