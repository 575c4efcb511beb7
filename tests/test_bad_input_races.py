"""Input that used to reach PostgreSQL (or the JSON parser) and come back as a 500.

- NUL characters, which PostgreSQL's text and jsonb refuse at the insert;
- JSON nested deeper than Python's recursion limit;
- a send or a rename racing the conversation's deletion.

Each is a clear 4xx and stores nothing. Marked `money` so it runs on PostgreSQL too,
where the NUL and race failures happened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection
from rest_framework.test import APIClient

from chat.models import Conversation, Message
from panels.models import ApiKey
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.test_bad_input import assert_json_error, send_url, state
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Hold

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

DEEP = 10_000


@pytest.fixture(autouse=True)
def nothing_is_queued(monkeypatch) -> None:
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: None)


@pytest.fixture
def api(alice, chat_catalog) -> APIClient:  # noqa: F811
    funded_wallet(alice, 1_000_000)
    client = APIClient()
    client.force_authenticate(alice)
    return client


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(user=alice, title="Kept")


@pytest.mark.parametrize(
    "payload",
    [
        {"content": "hi", "model": "demo", "attachments": [{"type": "image", "url": "https://example.com/a.png\x00"}]},
        {"content": "hi", "model": "demo", "attachments": ["https://example.com/\x00.png"]},
        {"content": "hi \x00 there", "model": "demo"},
    ],
    ids=["attachment-dict", "attachment-string", "content"],
)
def test_a_nul_character_in_a_send_is_400_and_stores_nothing(api, conversation, payload) -> None:
    before = state()

    response = api.post(send_url(conversation), payload, format="json")

    assert_json_error(response, 400)
    assert state() == before


def test_a_nul_character_in_an_api_key_name_is_400_and_makes_no_key(alice_client) -> None:
    response = alice_client.post("/accounts/profile/keys/", {"name": "laptop\x00"})

    assert response.status_code == 400
    assert "A key name may not contain a NUL character." in response.content.decode()
    assert not ApiKey.objects.exists()


def test_a_nul_character_in_a_form_encoded_api_body_is_400(api, conversation) -> None:
    before = state()

    response = api.post(send_url(conversation), {"content": "a\x00", "model": "demo"})

    assert_json_error(response, 400)
    assert state() == before


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_json_nested_ten_thousand_deep_is_400(api, conversation, opening) -> None:
    closing = "]" if opening == "[" else "}"
    body = opening * DEEP + "1" + closing * DEEP
    before = state()

    for url in (send_url(conversation), "/api/v1/conversations", "/api/v1/topups"):
        response = api.generic("POST", url, body, content_type="application/json")
        assert_json_error(response, 400)
    assert state() == before


def test_json_nested_ten_thousand_deep_is_400_on_the_openai_compatible_api(alice, chat_catalog) -> None:  # noqa: F811
    _, secret = ApiKey.issue(user=alice, name="k")
    client = APIClient()

    response = client.generic(
        "POST",
        "/v1/chat/completions",
        "[" * DEEP + "]" * DEEP,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


# --- a request racing the conversation's deletion ------------------------------------------


def race(first: Callable[[], int], second: Callable[[], int]) -> tuple[int, int]:
    """Run both at the same moment, each in its own thread and database connection."""
    barrier = threading.Barrier(2)
    results: list[int | str] = [0, 0]

    def run(index: int, call: Callable[[], int]) -> None:
        try:
            barrier.wait()
            results[index] = call()
        except Exception as exc:  # the test client re-raises what would be a 500
            results[index] = f"500: {exc!r}"
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results[0], results[1]


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


ROUNDS = 12


def test_a_send_racing_the_deletion_is_202_or_404_never_500(api, alice, settings) -> None:
    # Every send that wins stays queued (nothing runs the replies here), so the cap on
    # replies in flight would answer 429 once enough sends had won; the race is under test.
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 0
    outcomes = set()
    for _ in range(ROUNDS):
        conv = Conversation.objects.create(user=alice, title="racing")
        url = send_url(conv)

        sent, deleted = race(
            lambda url=url: (
                client_for(alice)
                .post(url, {"content": "[demo:tokens=5] hi", "model": "demo"}, format="json")
                .status_code
            ),
            lambda conv=conv: client_for(alice).delete(f"/api/v1/conversations/{conv.pk}").status_code,
        )

        outcomes.add((sent, deleted))
        # The send came first (its reply is queued, so the deletion is refused), or the
        # deletion did (the send finds no conversation).
        assert (sent, deleted) in {(202, 409), (404, 204)}, (sent, deleted)
    account = Account.objects.get(user=alice)
    pending = Hold.objects.filter(status=Hold.Status.PENDING)
    assert account.held == sum(h.amount for h in pending)
    assert not pending.filter(message__isnull=True).exists()  # no hold without its reply
    assert not Message.objects.filter(conversation__isnull=True).exists()
    print(f"\nsend vs delete outcomes over {ROUNDS} rounds: {sorted(outcomes)}")


def test_a_rename_racing_the_deletion_is_200_or_404_never_500(alice) -> None:
    outcomes = set()
    for _ in range(ROUNDS):
        conv = Conversation.objects.create(user=alice, title="racing")

        renamed, deleted = race(
            lambda conv=conv: (
                client_for(alice).patch(f"/api/v1/conversations/{conv.pk}", {"title": "new"}, format="json").status_code
            ),
            lambda conv=conv: client_for(alice).delete(f"/api/v1/conversations/{conv.pk}").status_code,
        )

        outcomes.add((renamed, deleted))
        assert renamed in (200, 404) and deleted == 204, (renamed, deleted)
        # Never brought back to life by the rename's save.
        assert not Conversation.objects.filter(pk=conv.pk).exists()
    print(f"\nrename vs delete outcomes over {ROUNDS} rounds: {sorted(outcomes)}")
