"""A production server, started as docs/operations.md says, credits no wallet without a
signed Stripe event, whatever an attacker sends.

The environment is the block of docs/operations.md with this machine's values filled in
(a throwaway PostgreSQL and Redis, the local Stripe fake as the API, a secret made here),
the set-up commands are the ones it lists (collectstatic aside: static files go to the
proxy), and the web process is the uvicorn command of its table, on a free port. The
test then plays an attacker with a session and an API key.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fakes.stripe_api import FakeStripe
from tests.reliability.conftest import PY, ROOT, Processes, free_port, report, wait_for
from tests.stripe_helpers import API_KEY, WEBHOOK_SECRET, event, sign

pytestmark = pytest.mark.slow

DOC = ROOT / "docs" / "operations.md"


def documented_env() -> dict[str, str]:
    """The variables of the ```bash block in docs/operations.md, as written there."""
    text = DOC.read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "docs/operations.md lost its environment block"
    found: dict[str, str] = {}
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        for word in shlex.split(line):
            name, sep, value = word.partition("=")
            if sep and re.fullmatch(r"[A-Z_]+", name):
                found[name] = value
    return found


def documented_web_command() -> list[str]:
    """The web process's command from the table in docs/operations.md."""
    row = next(line for line in DOC.read_text().splitlines() if line.startswith("| web |"))
    command = re.search(r"`([^`]+)`", row)
    assert command, row
    return shlex.split(command.group(1))


class Attacker:
    """A signed-in user of the production server: a browser session and an API key."""

    def __init__(self, base: str, info: dict) -> None:
        self.base = base
        self.http = requests.Session()
        csrf = uuid.uuid4().hex
        # Behind the TLS proxy, as the documentation sets it up: the proxy says https. The
        # cookies go as a header: the server's own are Secure, and this leg is plain http.
        self.http.headers.update(
            {
                "X-Forwarded-Proto": "https",
                "Cookie": f"sessionid={info['session']}; csrftoken={csrf}",
                "X-CSRFToken": csrf,
                "Origin": base.replace("http://", "https://"),
            }
        )
        self.api = requests.Session()
        self.api.headers.update({"X-Forwarded-Proto": "https", "Authorization": f"Bearer {info['api_key']}"})

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.base + path, allow_redirects=False, timeout=30, **kw)

    def post(self, path: str, data: dict | None = None, **kw) -> requests.Response:
        return self.http.post(self.base + path, data=data or {}, allow_redirects=False, timeout=30, **kw)

    def api_post(self, path: str, payload: dict) -> requests.Response:
        return self.api.post(self.base + path, json=payload, timeout=30)

    def api_get(self, path: str) -> requests.Response:
        return self.api.get(self.base + path, timeout=30)


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    server = FakeStripe(api_key=API_KEY).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def production(pg, redis, fake_stripe, tmp_path) -> Iterator[dict]:
    name = f"prod_{uuid.uuid4().hex[:10]}"
    database_url = pg.create_database(name)  # empty: the documented set-up builds it
    port = free_port()
    env_doc = documented_env()
    values = {
        "PANELS_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{port}",
        "SITE_URL": f"https://127.0.0.1:{port}",
        "BEHIND_TLS_PROXY": "1",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis.url,
        "DB_POOL_MAX_SIZE": "5",
        "STRIPE_SECRET_KEY": API_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    # Every variable the documentation asks for is set (provider keys stay unset here).
    missing = set(env_doc) - set(values) - {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY"}
    assert not missing, f"docs/operations.md asks for {sorted(missing)}, which this test does not set"
    scrub = {"DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DEBUG", "TOPUPS_ENABLED", "STRIPE_API_BASE"}
    scrub |= {k for k in os.environ if k.endswith("_API_KEY") or k.startswith("STRIPE_")}
    env = {k: v for k, v in os.environ.items() if k not in scrub}
    # STRIPE_API_BASE: the one addition, so the real SDK talks to the local fake.
    env.update(values, STRIPE_API_BASE=fake_stripe.url, PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING")

    for args in (("migrate", "--no-input", "-v0"), ("createcachetable",), ("load_catalog",)):
        done = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    seeded = subprocess.run(
        [PY, "-m", "tests.reliability.seed", "users", "--count", "2", "--credits", "0", "--prefix", "mallory"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    people = json.loads(seeded.stdout)

    argv = documented_web_command()
    assert argv[0].endswith("uvicorn"), argv
    argv[0] = str(Path(ROOT) / argv[0]) if not Path(argv[0]).is_absolute() else argv[0]
    argv[argv.index("--port") + 1] = str(port)
    procs = Processes(tmp_path)
    web = procs.spawn("web", argv, env)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not web.alive:
            return True
        try:
            requests.get(base + "/healthz", timeout=2, headers={"X-Forwarded-Proto": "https"})
        except requests.RequestException:
            return False
        return True

    try:
        wait_for(up, timeout=60, what="the production web process", every=0.2)
        assert web.alive, web.log_tail()
        yield {"base": base, "people": people, "database_url": database_url, "env": env, "web": web}
    finally:
        procs.stop_all()
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_no_request_sequence_credits_a_wallet_without_a_signed_stripe_event(production, fake_stripe, pg) -> None:
    from tests.reliability.conftest import sql

    base, db = production["base"], production["database_url"]
    mallory = Attacker(base, production["people"][0])
    victim = production["people"][1]

    def balance(user_id: int) -> int:
        rows = sql(db, "SELECT balance FROM wallet_account WHERE user_id = %s", [user_id])
        return rows[0][0] if rows else 0

    def credited_entries() -> int:
        return sql(db, "SELECT count(*) FROM wallet_entry WHERE kind = 'topup'")[0][0]

    tried: list[str] = []

    # The demo model is not in the catalog, and refused by name.
    models = mallory.api_get("/api/v1/models").json()
    rows = models if isinstance(models, list) else models.get("results", [])
    assert "demo" not in {m["id"] for m in rows}
    conv = mallory.api_post("/api/v1/conversations", {"title": "x"}).json()["id"]
    sent = mallory.api_post(f"/api/v1/conversations/{conv}/messages", {"content": "hi", "model": "demo"})
    # load_catalog made no demo row in production: it is unknown, as any made-up name.
    assert sent.status_code == 400 and sent.json()["error"]["code"] == "unknown_model", sent.text
    tried.append("demo model by name")

    # A top-up page and API start Stripe Checkout, never the demo checkout.
    page = mallory.get("/wallet/topup/")
    assert page.status_code == 200 and "no card is charged" not in page.text
    started = mallory.post("/wallet/topup/", {"amount_usd": "1000"})
    assert started.status_code == 302, started.text[:2000]
    assert started.headers["Location"].startswith("https://checkout.stripe.com/")
    api_started = mallory.api_post("/api/v1/topups", {"amount_usd": "1000"})
    assert api_started.status_code == 201 and api_started.json()["provider"] == "stripe"
    topup_ids = [row[0] for row in sql(db, "SELECT id FROM wallet_topup ORDER BY id")]
    tried.append("top-up page and API")

    # The demo checkout URLs do not exist, for any top-up id, any method.
    for topup_id in [*topup_ids, 1, 999]:
        for method in ("get", "post"):
            response = getattr(mallory, method)(f"/wallet/topup/{topup_id}/pay/")
            assert response.status_code == 404, (method, topup_id, response.status_code)
    tried.append("demo checkout URLs")

    # The success page with forged or borrowed session ids: Stripe says unpaid.
    for topup_id in topup_ids:
        for forged in ("", "cs_test_forged", "demo_1", f"demo_{topup_id}", "{CHECKOUT_SESSION_ID}"):
            response = mallory.get(f"/wallet/topup/{topup_id}/done/", params={"session_id": forged})
            assert response.status_code == 200
    assert mallory.get(f"/wallet/topup/{topup_ids[0] + 100}/done/").status_code == 404
    tried.append("success page with forged session ids")

    # Webhooks: unsigned, wrongly signed, signed with an old timestamp.
    session_id = sql(db, "SELECT checkout_session_id FROM wallet_topup ORDER BY id LIMIT 1")[0][0]
    forged_session = {**fake_stripe.sessions[session_id], "payment_status": "paid", "status": "complete"}
    body = json.dumps(event("checkout.session.completed", forged_session))
    url = base + "/api/v1/stripe/webhook"
    headers = {"X-Forwarded-Proto": "https", "Content-Type": "application/json"}
    for signature in (
        None,
        "",
        "t=1,v1=00",
        sign(body, secret="whsec_guessed"),
        sign(body, timestamp=1_000_000_000),  # the right secret, but a replay from 2001
    ):
        extra = {} if signature is None else {"Stripe-Signature": signature}
        response = requests.post(url, data=body, headers={**headers, **extra}, timeout=30)
        assert response.status_code == 400, (signature, response.status_code, response.text[:300])
    tried.append("webhooks without or with bad signatures, and a stale one")

    assert credited_entries() == 0
    assert balance(production["people"][0]["user_id"]) == 0

    # A correctly signed event for a session Stripe says is unpaid credits nothing either.
    unpaid = fake_stripe.sessions[session_id]
    honest_unpaid = json.dumps(event("checkout.session.completed", unpaid))
    response = requests.post(url, data=honest_unpaid, headers={**headers, "Stripe-Signature": sign(honest_unpaid)})
    assert response.status_code == 200
    assert credited_entries() == 0

    # The one way in: Stripe's signed event for a session really paid, applied once however replayed.
    paid = fake_stripe.mark_paid(session_id)
    signed = event("checkout.session.completed", paid)
    for _ in range(3):
        payload = json.dumps(signed)
        response = requests.post(url, data=payload, headers={**headers, "Stripe-Signature": sign(payload)})
        assert response.status_code == 200, response.text
    renamed = json.dumps({**signed, "id": "evt_replayed_with_a_new_id"})
    requests.post(url, data=renamed, headers={**headers, "Stripe-Signature": sign(renamed)})
    # The success page after payment agrees, and credits nothing more.
    mallory.get(f"/wallet/topup/{topup_ids[0]}/done/", params={"session_id": session_id})
    tried.append("a paid session's event replayed")

    assert credited_entries() == 1
    assert balance(production["people"][0]["user_id"]) == 2_000_000_000  # $1,000 at 2,000,000 credits per dollar
    assert balance(victim["user_id"]) == 0
    audit = subprocess.run(
        [PY, "manage.py", "wallet", "audit"], cwd=ROOT, env=production["env"], capture_output=True, text=True
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert production["web"].alive
    report("production_no_free_credits", attempts=len(tried), credited_entries=credited_entries(), tried=tried)
