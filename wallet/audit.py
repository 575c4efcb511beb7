"""The ledger audit: rebuild every balance from the entries and check what the
entries themselves promise. Each problem is a line naming what is wrong."""

from __future__ import annotations

from collections import defaultdict

from django.db import connection
from django.db.models import Sum

from wallet import digests
from wallet.models import Account, Entry, Hold, Shortfall, Takeback, Topup


def ledger_audit() -> list[str]:
    problems: list[str] = []
    problems += _balances()
    problems += _chains()
    problems += _holds()
    problems += _topups()
    problems += _triggers()
    return problems


def _label(account: Account) -> str:
    return f"account {account.pk} ({account.user.email if account.user else account.code})"


def _balances() -> list[str]:
    problems: list[str] = []
    credited = dict(Entry.objects.values_list("credit_account_id").annotate(s=Sum("amount")).order_by())
    debited = dict(Entry.objects.values_list("debit_account_id").annotate(s=Sum("amount")).order_by())
    pending = dict(
        Hold.objects.filter(status=Hold.Status.PENDING).values_list("account_id").annotate(s=Sum("amount")).order_by()
    )
    for account in Account.objects.filter(kind=Account.Kind.USER).select_related("user").iterator():
        rebuilt = credited.get(account.pk, 0) - debited.get(account.pk, 0)
        label = _label(account)
        if rebuilt != account.balance:
            problems.append(f"{label}: stored balance {account.balance} != {rebuilt} from entries")
        if pending.get(account.pk, 0) != account.held:
            problems.append(f"{label}: stored held {account.held} != {pending.get(account.pk, 0)} from pending holds")
        if account.balance < account.held or account.held < 0:
            problems.append(f"{label}: available is negative (balance {account.balance}, held {account.held})")
    for pk, key, amount in Entry.objects.filter(amount__lte=0).values_list("pk", "idempotency_key", "amount"):
        problems.append(f"entry {pk} ({key}): non-positive amount {amount}")
    return problems


def _chains() -> list[str]:
    """Each entry's digest chains its wallet's previous one; the last is the wallet's head."""
    problems: list[str] = []
    misplaced = Entry.objects.exclude(wallet__kind=Account.Kind.USER).values_list("pk", "idempotency_key")
    for pk, key in misplaced:
        problems.append(f"entry {pk} ({key}): its chain is not a user wallet's")
    heads = dict(Account.objects.filter(kind=Account.Kind.USER).values_list("pk", "chain_head"))
    if connection.vendor == "postgresql":
        broken, last = _chains_in_postgres()
    else:
        broken, last = _chains_in_python()
    for pk, key in broken:
        problems.append(f"entry {pk} ({key}): contents changed after it was written (digest chain broken)")
    for wallet_id, head in heads.items():
        if last.get(wallet_id, "") != head:
            problems.append(f"account {wallet_id}: chain head does not match its newest entry")
    return problems


def _chains_in_python() -> tuple[list[tuple[int, str]], dict[int, str]]:
    broken: list[tuple[int, str]] = []
    last: dict[int, str] = defaultdict(str)
    for entry in Entry.objects.order_by("wallet_id", "pk").iterator(chunk_size=5000):
        on_wallet = entry.wallet_id in (entry.debit_account_id, entry.credit_account_id)
        if entry.digest != entry.chained_digest(last[entry.wallet_id]) or not on_wallet:
            broken.append((entry.pk, entry.idempotency_key))
        last[entry.wallet_id] = entry.digest
    return broken, dict(last)


def _chains_in_postgres() -> tuple[list[tuple[int, str]], dict[int, str]]:
    # The database recomputes every link; only the broken ones and each chain's end
    # come back, so ten million entries never cross the wire.
    expected = digests.CHAIN_SQL.format(previous="coalesce(lag(e.digest) OVER w, '')", content=digests.CONTENT_SQL)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT id, idempotency_key FROM (
                SELECT e.id, e.idempotency_key, e.digest, {expected} AS expected,
                       e.wallet_id IN (e.debit_account_id, e.credit_account_id) AS on_wallet
                FROM wallet_entry e
                WINDOW w AS (PARTITION BY e.wallet_id ORDER BY e.id)
            ) links
            WHERE digest <> expected OR NOT on_wallet
            ORDER BY id
            """
        )
        broken = [(pk, key) for pk, key in cursor.fetchall()]
        cursor.execute("SELECT DISTINCT ON (wallet_id) wallet_id, digest FROM wallet_entry ORDER BY wallet_id, id DESC")
        last = dict(cursor.fetchall())
    return broken, last


def _holds() -> list[str]:
    problems: list[str] = []
    usage = dict(Entry.objects.filter(hold__isnull=False).values_list("hold_id", "amount"))
    posted = Hold.objects.filter(status=Hold.Status.POSTED).values_list("pk", "posted_amount")
    for hold_id, amount in posted.iterator():
        if usage.get(hold_id, 0) != amount:
            problems.append(f"hold {hold_id}: posted {amount} but its entry says {usage.get(hold_id, 0)}")
    unposted = Entry.objects.filter(hold__isnull=False).exclude(hold__status=Hold.Status.POSTED)
    for pk, hold_id, status in unposted.values_list("pk", "hold_id", "hold__status"):
        problems.append(f"entry {pk}: usage on hold {hold_id}, which is {status}, not posted")
    return problems


def _topups() -> list[str]:
    """Each top-up's credited amount and clawbacks agree with its entries and shortfalls."""
    problems: list[str] = []
    credited: dict[str, int] = defaultdict(int)
    credit_count: dict[str, int] = defaultdict(int)
    for reference, amount in Entry.objects.filter(kind=Entry.Kind.TOPUP).values_list("reference", "amount"):
        credited[reference] += amount
        credit_count[reference] += 1
    taken = dict(
        Entry.objects.filter(kind=Entry.Kind.REFUND).values_list("reference").annotate(s=Sum("amount")).order_by()
    )
    short: dict[str, int] = defaultdict(int)
    for reference, amount in Shortfall.objects.filter(reference__startswith="topup:").values_list(
        "reference", "amount"
    ):
        short[":".join(reference.split(":")[:2])] += amount
    # Take-backs still waiting for replies in flight to settle (counted in clawed_back_credits).
    owed = dict(
        Takeback.objects.filter(remaining__gt=0).values_list("reference").annotate(s=Sum("remaining")).order_by()
    )
    for topup in Topup.objects.only("pk", "credits", "credited_at", "clawed_back_credits").iterator():
        ref = f"topup:{topup.pk}"
        expected = topup.credits if topup.credited_at else 0
        if credited.get(ref, 0) != expected or credit_count.get(ref, 0) > 1:
            problems.append(
                f"top-up {topup.pk}: credited {credited.get(ref, 0)} in {credit_count.get(ref, 0)} entries, "
                f"expected {expected}"
            )
        clawed = taken.get(ref, 0) + short.get(ref, 0) + owed.get(ref, 0)
        if clawed != topup.clawed_back_credits:
            problems.append(
                f"top-up {topup.pk}: clawed back {taken.get(ref, 0)} + shortfall {short.get(ref, 0)} "
                f"+ still owed {owed.get(ref, 0)} != {topup.clawed_back_credits} recorded"
            )
    return problems


def _triggers() -> list[str]:
    """The database's refusal of entry changes is in place (SQLite drops triggers when
    a migration rebuilds a table)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'wallet_entry_immutable' AND tgenabled <> 'D'"
            )
            present = cursor.fetchone()[0] == 1
        elif connection.vendor == "sqlite":
            cursor.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'wallet_entry' "
                "AND name IN ('wallet_entry_no_update', 'wallet_entry_no_delete')"
            )
            present = cursor.fetchone()[0] == 2
        else:
            present = False
    return [] if present else ["wallet_entry: the trigger that refuses UPDATE and DELETE is missing or disabled"]
