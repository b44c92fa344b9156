"""Write batches of rows with COPY into a staging table, then merge them in one statement.

Row-by-row INSERTs cost a round trip and a plan per row; COPY streams the batch and the merge
is a single set-based ``INSERT ... SELECT ... ON CONFLICT``. The staging table is a temporary
table dropped at commit, so a failed batch leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ledger_assets.lib.ingest.tables import IngestTable


@dataclass(frozen=True)
class MergeCounts:
    inserted: int = 0
    updated: int = 0
    #: Rows whose stored snapshot was as new or newer: duplicates and late deliveries.
    unchanged: int = 0

    def __add__(self, other: MergeCounts) -> MergeCounts:
        return MergeCounts(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )


#: Batches up to this size skip the staging table: one multi-row INSERT is one round trip,
#: where staging costs four (create-if-missing, COPY, merge, and the duplicate check). Most
#: incremental pulls re-read a handful of objects per stream, so this is their common case.
SMALL_BATCH = 64


def _merge_statement(table: IngestTable, source: sql.Composable) -> sql.Composed:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    target = sql.Identifier("ledger", table.name)
    key = sql.Identifier(table.key)
    non_key = [c for c in table.columns if c != table.key]
    conflict: sql.Composable
    if table.progress is None:
        conflict = sql.SQL("do nothing")
    else:
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in non_key
        )
        stored = sql.SQL(table.progress.format(t="t"))
        incoming = sql.SQL(table.progress.format(t="excluded"))
        newer: sql.Composable
        if table.has_source_ts:
            newer = sql.SQL("(excluded.source_ts, {}) > (t.source_ts, {})").format(incoming, stored)
        else:
            # Ordered sources (Plaid's cursor) replace a row whenever its content changed.
            newer = sql.SQL("({}) is distinct from ({})").format(
                sql.SQL(", ").join(
                    sql.SQL("excluded.{}").format(sql.Identifier(c)) for c in non_key
                ),
                sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in non_key),
            )
        conflict = sql.SQL("do update set {} where {}").format(assignments, newer)
    # `xmax = 0` is true for a freshly inserted tuple and false for an updated one.
    return sql.SQL(
        "with merged as (insert into {target} as t ({columns}) {source} "
        "on conflict ({key}) {conflict} returning (xmax = 0) as inserted) "
        "select count(*) filter (where inserted), count(*) filter (where not inserted) from merged"
    ).format(target=target, columns=columns, source=source, key=key, conflict=conflict)


def merge_rows(
    conn: psycopg.Connection[tuple[object, ...]],
    table: IngestTable,
    rows: Iterable[Sequence[object]],
) -> MergeCounts:
    """Merge ``rows`` (tuples in ``table.columns`` order, the key first) into ``table``.

    Small batches go in one multi-row INSERT; larger ones are staged with COPY first. Must run
    inside a transaction: the staging table is emptied when it commits. Rows with the same key
    in one batch are reduced to the most advanced one first, because one INSERT may not touch a
    row twice.
    """
    batch = list(rows)
    if not batch:
        return MergeCounts()
    keys = [row[0] for row in batch]
    duplicates = len(set(keys)) != len(keys)
    if len(batch) <= SMALL_BATCH and not duplicates:
        row_sql = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(table.columns)))
        source: sql.Composable = sql.SQL("values {}").format(
            sql.SQL(", ").join(row_sql for _ in batch)
        )
        params = [value for row in batch for value in row]
        result = conn.execute(_merge_statement(table, source), params).fetchone()
    else:
        stage = _stage(conn, table, batch)
        if duplicates:
            _keep_most_advanced_duplicate(conn, table, stage)
        source = sql.SQL("select {} from {} order by {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in table.columns),
            sql.Identifier(stage),
            sql.Identifier(table.key),
        )
        result = conn.execute(_merge_statement(table, source)).fetchone()
    assert result is not None
    inserted, updated = int(str(result[0])), int(str(result[1]))
    return MergeCounts(inserted, updated, len(batch) - inserted - updated)


def _stage(
    conn: psycopg.Connection[tuple[object, ...]], table: IngestTable, batch: list[Sequence[object]]
) -> str:
    """COPY ``batch`` into the session's staging table for ``table``; returns its name."""
    stage = f"stage_{table.name}"
    # A session-long staging table emptied at each commit: creating and dropping one per batch
    # cost catalog writes and two round trips, which dominated small incremental pulls.
    # (Not remembered client-side: a rolled-back transaction takes the creation with it.)
    conn.execute(
        sql.SQL(
            "create temp table if not exists {stage} "
            "(like {target} including defaults) on commit delete rows"
        ).format(stage=sql.Identifier(stage), target=sql.Identifier("ledger", table.name))
    )
    copy_sql = sql.SQL("copy {} ({}) from stdin").format(
        sql.Identifier(stage), sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    )
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for row in batch:
            copy.write_row(row)
    return stage


def _keep_most_advanced_duplicate(
    conn: psycopg.Connection[tuple[object, ...]], table: IngestTable, stage: str
) -> None:
    order: list[sql.Composable] = [sql.SQL("s.ctid desc")]
    if table.progress is not None:
        rank = sql.SQL(table.progress.format(t="s"))
        order = [
            *([sql.SQL("s.source_ts desc")] if table.has_source_ts else []),
            sql.SQL("{} desc").format(rank),
            *order,
        ]
    conn.execute(
        sql.SQL(
            "delete from {stage} d using (select ctid, row_number() over "
            "(partition by {key} order by {order}) as n from {stage} s) r "
            "where d.ctid = r.ctid and r.n > 1"
        ).format(
            stage=sql.Identifier(stage),
            key=sql.Identifier(table.key),
            order=sql.SQL(", ").join(order),
        )
    )
