"""CDC capture: Postgres logical replication (pgoutput) into a durable, typed change log.

This package is the capture half of the CDC pipeline and imports nothing from Dagster: a
sensor or an asset calls it. It reads the publication's changes from a logical slot with
bounded ``pg_logical_slot_peek_binary_changes`` calls, decodes pgoutput v1 itself, lands each
batch as Parquet files plus a manifest under the lake's change-log folder, and only then
confirms the position with ``pg_replication_slot_advance``. A crash at any point loses nothing
and replays change nothing (see capture.py). The record schema is in changelog.py.

Typical use::

    config = CaptureConfig(dsn=..., changelog_dir=lake / "_changelog",
                           slot_name="ledger_lake", publication="ledger_lake")
    with ChangeCapture(config) as capture:
        capture.start()            # create or check publication, slot, state
        for result in capture.run(max_seconds=20):
            ...                    # result.manifest lists the landed files

Fail closed
-----------
Whenever the slot cannot be proven to continue the change log exactly, capture raises a
:class:`FailClosedError` subclass with a one-line message and stays stopped:

* the slot is missing, or invalidated (``wal_status = 'lost'``): :class:`SlotLostError`;
* the slot is another one than the change log was built from: recreated (its confirmed
  position is ahead of the change log), restored (its restart_lsn went back), on another
  cluster (system identifier) or in another database: :class:`SlotRecreatedError`;
* the slot is behind the change log and the batches in between cannot be re-read identically:
  :class:`PositionMismatchError`;
* a table was recreated, or a column dropped, renamed or retyped, or added with a default
  (rows older than the add hold it with no change in the stream); or a type has no exact
  mapping: :class:`UnsupportedSchemaChangeError` (a column added without a default is
  followed: older lake files read NULL for it, as Postgres does);
* an unchanged TOASTed value arrives with no old row to take it from:
  :class:`ToastValueUnavailableError`.

Re-snapshot
-----------
The way out of every fail-closed state, and how a new lake is seeded:

1. Stop the CDC sensor so nothing captures meanwhile.
2. ``reset_capture(config)``: drops the slot and renames the change-log folder to
   ``<folder>.reset-<UTC time>`` (kept for forensics, never deleted).
3. ``with ChangeCapture(config) as c, c.start_with_snapshot() as snap:`` creates a new slot
   with an exported snapshot; inside the block, copy every mirrored table in a REPEATABLE
   READ transaction after ``SET TRANSACTION SNAPSHOT snap.snapshot_name`` and rebuild the lake
   from that copy, recording ``snap.consistent_lsn`` as the lake's watermark.
4. Start the sensor: the change log now begins exactly at ``snap.consistent_lsn``.
"""

from ledger_assets.lib.cdc.capture import (
    BatchResult,
    CaptureConfig,
    CaptureHealth,
    ChangeCapture,
    capture_health,
    reset_capture,
)
from ledger_assets.lib.cdc.changelog import (
    BatchRef,
    ChangeFile,
    ColumnSpec,
    Manifest,
    list_batches,
    read_changes,
)
from ledger_assets.lib.cdc.errors import (
    CaptureBusyError,
    CdcError,
    ChangeLogCorruptError,
    DecodeError,
    FailClosedError,
    PositionMismatchError,
    PublicationMismatchError,
    SlotLostError,
    SlotRecreatedError,
    ToastValueUnavailableError,
    UnsupportedSchemaChangeError,
)
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.cdc.slot import SlotInfo, SlotSnapshot
from ledger_assets.lib.cdc.state import CaptureState

__all__ = [
    "BatchRef",
    "BatchResult",
    "CaptureBusyError",
    "CaptureConfig",
    "CaptureHealth",
    "CaptureState",
    "CdcError",
    "ChangeCapture",
    "ChangeFile",
    "ChangeLogCorruptError",
    "ColumnSpec",
    "DecodeError",
    "FailClosedError",
    "Lsn",
    "Manifest",
    "PositionMismatchError",
    "PublicationMismatchError",
    "SlotInfo",
    "SlotLostError",
    "SlotRecreatedError",
    "SlotSnapshot",
    "ToastValueUnavailableError",
    "UnsupportedSchemaChangeError",
    "capture_health",
    "list_batches",
    "read_changes",
    "reset_capture",
]
