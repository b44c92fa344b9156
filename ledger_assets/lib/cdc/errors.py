"""What can stop the capture, split by what an operator must do about it.

:class:`FailClosedError` and its subclasses mean "the lake can no longer be proven complete from
this slot": capture stops and stays stopped until someone follows the re-snapshot path named in
the message. :class:`CaptureBusyError` is transient: another capture holds the slot; retry later.
"""

from __future__ import annotations

#: The documented way out of every fail-closed state (see the package docstring).
RESNAPSHOT_HINT = (
    "re-snapshot: ledger_assets.lib.cdc.reset_capture() then re-seed the lake from the new slot's"
    " exported snapshot (ledger_assets/lib/cdc/__init__.py, 'Re-snapshot')"
)


class CdcError(RuntimeError):
    """Base class of every CDC capture error."""


class CaptureBusyError(CdcError):
    """Another process is capturing from the same slot right now."""


class FailClosedError(CdcError):
    """Capture refuses to go on: continuing could skip or double changes.

    The message is one line: what is wrong, then the re-snapshot path.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{problem}; {RESNAPSHOT_HINT}")


class SlotLostError(FailClosedError):
    """The slot is missing or Postgres invalidated it (``wal_status = 'lost'``)."""


class SlotRecreatedError(FailClosedError):
    """The slot is not the one this change log was built from (recreated, restored, moved)."""


class PositionMismatchError(FailClosedError):
    """The slot's confirmed position disagrees with what the change log holds."""


class ChangeLogCorruptError(FailClosedError):
    """The change log on disk is inconsistent with its own state file."""


class DecodeError(FailClosedError):
    """A pgoutput message or value could not be decoded exactly."""


class UnsupportedSchemaChangeError(FailClosedError):
    """A published table changed in a way the lake cannot follow (type change, drop, rename)."""


class ToastValueUnavailableError(FailClosedError):
    """An unchanged TOASTed value was sent without an old tuple to recover it from."""


class PublicationMismatchError(FailClosedError):
    """The publication exists but does not publish exactly what the lake mirrors."""
