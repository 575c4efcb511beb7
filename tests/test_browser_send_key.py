"""The chat page sends one Idempotency-Key per message: when the answer to a send is lost
on the way back (the server stored the reply, the page saw a network error), sending again
reuses the key, so the server answers the first send and nothing is stored or charged twice.
"""

from __future__ import annotations

import re

import pytest

from chat.models import Message
from tests.conftest import make_user
from tests.e2e_servers import celery_worker, chat_catalog, demo_server  # noqa: F401
from tests.test_browser_chat import (  # noqa: F401
    EMAIL,
    PASSWORD,
    browser,
    last_reply,
    log_in,
    open_page,
    orm,
    send_with_enter,
    settled,
)
from tests.wallet_helpers import funded_wallet
from wallet.models import Hold

pytestmark = pytest.mark.browser


def test_a_send_whose_answer_was_lost_is_not_stored_twice(browser, live_server) -> None:  # noqa: F811
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    send_url = re.compile(r"/api/v1/conversations/\d+/messages$")
    keys: list[str | None] = []

    def lose_the_answer(route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        route.fetch()  # the server receives the send and stores the reply...
        route.abort("internetdisconnected")  # ...and its answer never arrives

    page.route(send_url, lose_the_answer)
    send_with_enter(page, "[demo:tokens=4] Once only")
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "Could not reach Panels" in alert.inner_text()
    assert orm(lambda: Message.objects.filter(role="assistant").count()) == 1
    page.unroute(send_url)

    page.route(send_url, lambda route: (keys.append(route.request.headers.get("idempotency-key")), route.continue_()))
    page.get_by_role("button", name="Send").click()
    settled(last_reply(page))

    assert keys[0] and keys[0] == keys[1]
    assert page.locator("article.msg-assistant").count() == 1
    assert orm(lambda: (Message.objects.filter(role="assistant").count(), Hold.objects.count())) == (1, 1)
    # The lost answer is the only problem the page saw.
    assert page.problems == ["Failed to load resource: net::ERR_INTERNET_DISCONNECTED"]

    # The next message takes a new key.
    send_with_enter(page, "[demo:tokens=4] A second message")
    page.locator("article.msg-assistant").nth(1).wait_for()
    assert len(keys) == 3 and keys[2] not in (None, keys[0])
    assert len(page.problems) == 1
