"""Database triggers that refuse UPDATE and DELETE of ledger entries.

What the code promises (entries are never changed; a correction is a new entry),
the database enforces, so a raw SQL session or a bug elsewhere can't break it.
Installed by migration 0004. TRUNCATE (PostgreSQL) is a table-owner privilege and
fires no row trigger: the application's role should not own the tables in production
(docs/operations.md).
"""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper

MESSAGE = "ledger entries are immutable: post a reversing entry instead"

_POSTGRES_INSTALL = [
    f"""
    CREATE OR REPLACE FUNCTION wallet_entry_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
    END
    $$
    """,
    "DROP TRIGGER IF EXISTS wallet_entry_immutable ON wallet_entry",
    """
    CREATE TRIGGER wallet_entry_immutable BEFORE UPDATE OR DELETE ON wallet_entry
    FOR EACH ROW EXECUTE FUNCTION wallet_entry_immutable()
    """,
]
_POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS wallet_entry_immutable ON wallet_entry",
    "DROP FUNCTION IF EXISTS wallet_entry_immutable()",
]
_SQLITE_INSTALL = [
    f"""
    CREATE TRIGGER IF NOT EXISTS wallet_entry_no_update BEFORE UPDATE ON wallet_entry
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS wallet_entry_no_delete BEFORE DELETE ON wallet_entry
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
    """,
]
_SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS wallet_entry_no_update",
    "DROP TRIGGER IF EXISTS wallet_entry_no_delete",
]


def _statements(connection: BaseDatabaseWrapper, *, install: bool) -> list[str]:
    if connection.vendor == "postgresql":
        return _POSTGRES_INSTALL if install else _POSTGRES_DROP
    if connection.vendor == "sqlite":
        return _SQLITE_INSTALL if install else _SQLITE_DROP
    raise NotImplementedError(f"no ledger immutability trigger for {connection.vendor}")


def install(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection, install=True):
            cursor.execute(sql)


def drop(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection, install=False):
            cursor.execute(sql)
