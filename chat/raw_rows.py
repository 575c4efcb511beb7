"""ORM instances from the rows of the chat path's written-out statements (chat/claim.py,
chat/send_sql.py): each column converted as Django's compiler converts a query's rows,
then `Model.from_db`, so the instance is what the ORM's own query would have loaded."""

from __future__ import annotations

from django.db import connection
from django.db.models import Model


def columns(model: type[Model], alias: str) -> str:
    """`alias.column, ...` for every concrete field, in the order `instance` takes them."""
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


def converters(model: type[Model], alias: str) -> list[tuple]:
    """Each column's converters, as Django's compiler applies them to a query's rows."""
    out = []
    for field in model._meta.concrete_fields:
        col = field.get_col(alias)
        out.append((col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)))
    return out


def instance(model: type[Model], converted_by: list[tuple], values: tuple | list) -> Model | None:
    """The instance of a row's `values` (None if its primary key is NULL: a LEFT JOIN's miss)."""
    if values[[f.primary_key for f in model._meta.concrete_fields].index(True)] is None:
        return None
    converted = []
    for value, (col, funcs) in zip(values, converted_by, strict=True):
        for func in funcs:
            value = func(value, col, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in model._meta.concrete_fields], converted)
