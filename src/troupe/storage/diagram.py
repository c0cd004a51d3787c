"""The data model as a Mermaid ER diagram, generated from the table models
(``troupe db diagram``; docs/data-model.md holds its output, checked by a test)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, Integer, MetaData, String, Text
from sqlalchemy.types import TypeEngine

from troupe.storage.tables import Base, UtcDateTime

_TYPES: list[tuple[type[TypeEngine[Any]], str]] = [
    (UtcDateTime, "timestamptz"),
    (BigInteger, "bigint"),
    (Integer, "int"),
    (Boolean, "bool"),
    (Float, "float"),
    (Text, "text"),
    (String, "string"),
    (JSON, "json"),
]


def mermaid(metadata: MetaData = Base.metadata) -> str:
    """Every table with its columns and keys, and every foreign key as a relationship."""
    lines = ["erDiagram"]
    relations: list[str] = []
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        lines.append(f"    {table.name} {{")
        for column in table.columns:
            keys = _keys(column)
            lines.append(f"        {_type(column)} {column.name}{f' {keys}' if keys else ''}")
        lines.append("    }")
        for fk in sorted(table.foreign_keys, key=lambda f: f.parent.name):
            relations.append(
                f'    {fk.column.table.name} ||--o{{ {table.name} : "{fk.parent.name}"'
            )
    return "\n".join(lines + relations) + "\n"


def _type(column: Column[object]) -> str:
    for sql_type, name in _TYPES:
        if isinstance(column.type, sql_type):
            return name
    return type(column.type).__name__.lower()


def _keys(column: Column[object]) -> str:
    keys = []
    if column.primary_key:
        keys.append("PK")
    if column.foreign_keys:
        keys.append("FK")
    if column.unique and not column.primary_key:
        keys.append("UK")
    return ", ".join(keys)
