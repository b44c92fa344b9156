"""The local instance's event log: Dagster's SQLite event log with pooled connections.

Every event a run records (a step starting, a log line, a materialization, a check's result)
is one write. Dagster's ``SqliteEventLogStorage`` builds a new SQLAlchemy engine for each one,
with ``NullPool``: create the engine, connect, begin, insert, commit (an fsync of the WAL),
close, dispose; asset and check events do it a second time for the index shard. A one-day
marts run records ~340 events, and those writes were about half of its time (ARCHITECTURE.md
§10). Measured by ``python -m bench event_log`` (a job logging 300 messages and a marts-sized
asset run, side by side with the stock storage).

:class:`PooledSqliteEventLogStorage` changes only how connections are made:

* one engine per shard (run database or the index), kept for the process: connections are
  reused instead of opened per event. At most :data:`OPEN_SHARDS` shards stay open (least
  recently used first out), so a webserver browsing thousands of runs holds a few files open.
* ``PRAGMA synchronous = NORMAL`` on its connections. In WAL mode (which Dagster sets) a commit
  is then durable against the process crashing, and no longer fsyncs the log each time; a
  power loss can lose the last events, never corrupt the database (SQLite's documented WAL
  guarantee). The event log is Dagster's bookkeeping, not the system of record, and a
  production deployment uses Postgres storage (docs/deploy/dagster.yaml), where this class
  plays no part.
* fork safety: a forked run worker (``defs/launcher.py``) must not use its parent's SQLite
  connections, so engines belong to the process that made them and a child drops them
  unclosed (``Engine.dispose(close=False)``).

Everything else (schema, migrations, the index shard's mirroring, watchers) is Dagster's.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine

#: Shards (run databases and the index) kept connected per process.
OPEN_SHARDS = 8


def _set_synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` that reuses a connection per shard (see the module's docs).

    Configured in ``dagster.yaml`` as ``event_log_storage`` with the stock class's one setting,
    ``base_dir``.
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._engines_lock = threading.Lock()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            if self._engines_pid != os.getpid():
                # A forked child: the parent's connections are not ours to use or to close.
                for engine in self._engines.values():
                    engine.dispose(close=False)
                self._engines.clear()
                self._engines_pid = os.getpid()
            known = self._engines.get(shard)
            if known is not None:
                self._engines.move_to_end(shard)
                return known
            engine = sa.create_engine(
                self.conn_string_for_shard(shard),
                # One connection per shard: this storage serialises its own use (_db_lock); the
                # overflow only guards against a caller that does not.
                poolclass=sa.pool.QueuePool,
                pool_size=1,
                max_overflow=4,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            sa.event.listen(engine, "connect", _set_synchronous_normal)
            self._engines[shard] = engine
            while len(self._engines) > OPEN_SHARDS:
                _, evicted = self._engines.popitem(last=False)
                evicted.dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def dispose(self) -> None:
        with self._engines_lock:
            if self._engines_pid == os.getpid():
                for engine in self._engines.values():
                    engine.dispose()
            self._engines.clear()
        super().dispose()
