"""Bulk reads and writes for tables with tens of thousands of plain rows (share records).

DataJoint's ``insert`` validates and converts every row in Python, and its fetch builds a
dictionary per row; for the share record of a large lab share that is most of the scan time.
These helpers send one multi-row statement per chunk through the driver instead. Only for
tables of plain columns (numbers, strings, dates): no blobs, no codecs.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import datajoint as dj

from . import db

CHUNK = 5000


def _quoted(table: dj.Table, columns: Sequence[str]) -> str:
    quote = table.connection.adapter.quote_identifier
    return ", ".join(quote(c) for c in columns)


def insert_rows(table: type[dj.Table] | dj.Table, columns: Sequence[str], rows: Sequence[tuple]) -> int:
    """INSERT the rows (tuples in ``columns`` order) in chunks; returns how many were sent."""
    table = table() if isinstance(table, type) else table
    if not rows:
        return 0
    head = f"INSERT INTO {table.full_table_name} ({_quoted(table, columns)}) VALUES "
    if db.backend() == "postgresql":
        from psycopg2.extras import execute_values

        execute_values(table.connection._conn.cursor(), head + "%s", rows, page_size=CHUNK)
    else:
        placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            table.connection.query(head + ", ".join([placeholders] * len(chunk)), [v for row in chunk for v in row])
    return len(rows)


def select_rows(table: type[dj.Table] | dj.Table, columns: Sequence[str], where: dict | None = None) -> list[tuple]:
    """SELECT plain columns, optionally where column = value for each item of ``where``."""
    table = table() if isinstance(table, type) else table
    quote = table.connection.adapter.quote_identifier
    sql = f"SELECT {_quoted(table, columns)} FROM {table.full_table_name}"
    args: list = []
    if where:
        sql += " WHERE " + " AND ".join(f"{quote(k)} = %s" for k in where)
        args = list(where.values())
    return list(table.connection.query(sql, args=args).fetchall())


def values(rows: Iterable[dict], columns: Sequence[str]) -> list[tuple]:
    return [tuple(row[c] for c in columns) for row in rows]


def update_where_in(table: type[dj.Table] | dj.Table, assignments: dict, where: dict, column: str, keys: Sequence) -> int:
    """UPDATE ... SET assignments WHERE where-columns match AND column IN keys (in chunks)."""
    table = table() if isinstance(table, type) else table
    quote = table.connection.adapter.quote_identifier
    sets = ", ".join(f"{quote(k)} = %s" for k in assignments)
    fixed = " AND ".join(f"{quote(k)} = %s" for k in where)
    for start in range(0, len(keys), CHUNK):
        chunk = list(keys[start:start + CHUNK])
        sql = (f"UPDATE {table.full_table_name} SET {sets} WHERE {fixed}{' AND ' if fixed else ''}"
               f"{quote(column)} IN ({', '.join(['%s'] * len(chunk))})")
        table.connection.query(sql, [*assignments.values(), *where.values(), *chunk])
    return len(keys)
