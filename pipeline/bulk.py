"""Bulk reads and writes for tables with tens of thousands of plain rows (share records).

DataJoint's ``insert`` validates and converts every row in Python, and its fetch builds a
dictionary per row; for the share record of a large lab share that is most of the scan time.
These helpers send one multi-row statement per chunk through the driver instead. Only for
tables of plain columns (numbers, strings, dates): no blobs, no codecs.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Iterable, Sequence

import datajoint as dj
from pymysql.converters import escape_string

from . import db

CHUNK = 10000
PG_NULL = "\\N"  # COPY's NULL marker, so that '' stays an empty string


def _quoted(table: dj.Table, columns: Sequence[str]) -> str:
    quote = table.connection.adapter.quote_identifier
    return ", ".join(quote(c) for c in columns)


def insert_rows(table: type[dj.Table] | dj.Table, columns: Sequence[str], rows: Sequence[tuple]) -> int:
    """INSERT the rows (tuples in ``columns`` order); returns how many were sent.

    PostgreSQL gets them through ``COPY`` on the same connection (so inside any open
    transaction); MySQL through multi-row INSERTs of pre-formatted literals. Values may be
    str, int, float, bool, date/datetime or None.
    """
    table = table() if isinstance(table, type) else table
    if not rows:
        return 0
    if db.backend() == "postgresql":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(
            [tuple(PG_NULL if v is None else _pg_text(v) for v in row) for row in rows])
        buffer.seek(0)
        table.connection._conn.cursor().copy_expert(
            f"COPY {table.full_table_name} ({_quoted(table, columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer)
        return len(rows)
    head = f"INSERT INTO {table.full_table_name} ({_quoted(table, columns)}) VALUES "
    # Column by column: one comprehension per column is several times faster than a call per value.
    literal_columns = [[_mysql_literal(v) for v in column] if _needs_care(column) else [repr(v) for v in column]
                       for column in zip(*rows)]
    tuples = ["(" + ",".join(values) + ")" for values in zip(*literal_columns)]
    for start in range(0, len(tuples), CHUNK):
        table.connection.query(head + ",".join(tuples[start:start + CHUNK]))
    return len(rows)


def _needs_care(column: tuple) -> bool:
    """Everything but plain ints and floats needs quoting or escaping."""
    return not all(type(v) in (int, float) for v in column)


def _pg_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _mysql_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + escape_string(value) + "'"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return f"'{value.isoformat(sep=' ') if isinstance(value, dt.datetime) else value.isoformat()}'"
    raise TypeError(f"bulk insert cannot send a {type(value).__name__}")


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


def delete_where_in(table: type[dj.Table] | dj.Table, where: dict, column: str, keys: Sequence) -> int:
    """DELETE ... WHERE where-columns match AND column IN keys (in chunks)."""
    table = table() if isinstance(table, type) else table
    quote = table.connection.adapter.quote_identifier
    fixed = " AND ".join(f"{quote(k)} = %s" for k in where)
    for start in range(0, len(keys), CHUNK):
        chunk = list(keys[start:start + CHUNK])
        sql = (f"DELETE FROM {table.full_table_name} WHERE {fixed}{' AND ' if fixed else ''}"
               f"{quote(column)} IN ({', '.join(['%s'] * len(chunk))})")
        table.connection.query(sql, [*where.values(), *chunk])
    return len(keys)


class BackgroundInserter:
    """Sends batches of rows to the database from a thread while the caller prepares more.

    Uses the caller's connection (and so its open transaction); the caller must not use that
    connection until the ``with`` block ends, which waits for the last batch and re-raises any
    database error.
    """

    def __init__(self, table: type[dj.Table] | dj.Table, columns: Sequence[str], batch: int = CHUNK) -> None:
        import queue
        import threading

        self.table, self.columns, self.batch = table, columns, batch
        self.pending: list[tuple] = []
        self.queue: "queue.Queue[list[tuple] | None]" = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="bulk-insert", daemon=True)

    def _work(self) -> None:
        while (rows := self.queue.get()) is not None:
            if self.error is None:
                try:
                    insert_rows(self.table, self.columns, rows)
                except BaseException as err:  # handed to the caller on exit
                    self.error = err

    def put(self, rows: Sequence[tuple]) -> None:
        self.pending.extend(rows)
        if len(self.pending) >= self.batch:
            self.queue.put(self.pending)
            self.pending = []

    def __enter__(self) -> "BackgroundInserter":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.pending:
            self.queue.put(self.pending)
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error
