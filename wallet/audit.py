"""The ledger audit: rebuild every balance from the entries and check what the
entries themselves promise. Each problem is a line naming what is wrong."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import F, Sum
from django.db.models.functions import Coalesce

from wallet import audit_chains
from wallet.models import Account, AuditCheckpoint, Entry, Hold, Shortfall, Takeback, Topup


def ledger_audit(*, full: bool = True) -> list[str]:
    """Every check, in one consistent snapshot of the database.

    With `full=False`, each wallet's entries are verified from its checkpoint on (the
    digest and balance a clean audit recorded there); a clean audit moves the
    checkpoints to the newest entries either way.
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql" and outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        checkpoints = {} if full else _checkpoints()
        problems: list[str] = []
        chain_problems, reached = _chains(checkpoints, outermost=outermost)
        problems += _balances(checkpoints, reached)
        problems += chain_problems
        problems += _holds()
        problems += _topups()
        problems += _triggers()
    if not problems:
        _move_checkpoints(reached)
    return problems


@dataclass(frozen=True)
class _Point:
    entry_id: int
    digest: str
    balance: int


def _checkpoints() -> dict[int, _Point]:
    return {
        pk: _Point(entry_id, digest, balance)
        for pk, entry_id, digest, balance in AuditCheckpoint.objects.values_list(
            "account_id", "entry_id", "digest", "balance"
        )
    }


def _move_checkpoints(reached: dict[int, _Point]) -> None:
    AuditCheckpoint.objects.bulk_create(
        [
            AuditCheckpoint(account_id=pk, entry_id=p.entry_id, digest=p.digest, balance=p.balance)
            for pk, p in reached.items()
        ],
        update_conflicts=True,
        unique_fields=["account"],
        update_fields=["entry_id", "digest", "balance", "checked_at"],
        batch_size=5000,
    )


def _label(account: Account) -> str:
    return f"account {account.pk} ({account.user.email if account.user else account.code})"


def _balances(checkpoints: dict[int, _Point], reached: dict[int, _Point]) -> list[str]:
    problems: list[str] = []
    pending = dict(
        Hold.objects.filter(status=Hold.Status.PENDING).values_list("account_id").annotate(s=Sum("amount")).order_by()
    )
    for account in Account.objects.filter(kind=Account.Kind.USER).select_related("user").iterator():
        point = reached.get(account.pk) or checkpoints.get(account.pk)
        rebuilt = point.balance if point else 0
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


def _chains(checkpoints: dict[int, _Point], *, outermost: bool) -> tuple[list[str], dict[int, _Point]]:
    """Each entry's digest chains its wallet's previous one; the last is the wallet's head.

    Returns the problems and, per wallet with entries past its checkpoint, the point
    reached (newest entry, its digest, the balance the entries add up to)."""
    problems: list[str] = []
    misplaced = Entry.objects.exclude(wallet__kind=Account.Kind.USER).values_list("pk", "idempotency_key")
    for pk, key in misplaced:
        problems.append(f"entry {pk} ({key}): its chain is not a user wallet's")
    if connection.vendor == "postgresql":
        broken, reached = _chains_in_postgres(checkpoints, outermost=outermost)
    else:
        broken, reached = _chains_in_python(checkpoints)
    for pk, key in broken:
        problems.append(f"entry {pk} ({key}): contents changed after it was written (digest chain broken)")
    for wallet_id, head in Account.objects.filter(kind=Account.Kind.USER).values_list("pk", "chain_head"):
        point = reached.get(wallet_id) or checkpoints.get(wallet_id)
        if (point.digest if point else "") != head:
            problems.append(f"account {wallet_id}: chain head does not match its newest entry")
    return problems, reached


def _chains_in_python(checkpoints: dict[int, _Point]) -> tuple[list[tuple[int, str]], dict[int, _Point]]:
    broken: list[tuple[int, str]] = []
    reached: dict[int, _Point] = {}
    since = min((p.entry_id for p in checkpoints.values()), default=0)
    for entry in Entry.objects.filter(pk__gt=since).order_by("wallet_id", "pk").iterator(chunk_size=5000):
        start = checkpoints.get(entry.wallet_id)
        if start is not None and entry.pk <= start.entry_id:
            continue
        last = reached.get(entry.wallet_id) or start or _Point(0, "", 0)
        on_wallet = entry.wallet_id in (entry.debit_account_id, entry.credit_account_id)
        if entry.digest != entry.chained_digest(last.digest) or not on_wallet:
            broken.append((entry.pk, entry.idempotency_key))
        signed = entry.amount if entry.credit_account_id == entry.wallet_id else -entry.amount
        reached[entry.wallet_id] = _Point(entry.pk, entry.digest, last.balance + signed)
    return broken, reached


def _chains_in_postgres(
    checkpoints: dict[int, _Point], *, outermost: bool
) -> tuple[list[tuple[int, str]], dict[int, _Point]]:
    # Entries stream out in id order and every link is recomputed in Python, in
    # parallel processes for a big ledger (wallet/audit_chains.py says why).
    parts = audit_chains.segments(incremental=bool(checkpoints), outermost=outermost)
    broken, state = audit_chains.stitch(parts, {pk: (p.digest, p.balance) for pk, p in checkpoints.items()})
    return broken, {wallet: _Point(*end) for wallet, end in state.items()}


def _holds() -> list[str]:
    problems: list[str] = []
    # Set-based: the database compares each posted hold with its entry.
    posted = (
        Hold.objects.filter(status=Hold.Status.POSTED)
        .annotate(entered=Coalesce("entry__amount", 0))
        .exclude(entered=F("posted_amount"))
        .values_list("pk", "posted_amount", "entered")
    )
    for hold_id, amount, entered in posted:
        problems.append(f"hold {hold_id}: posted {amount} but its entry says {entered}")
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
