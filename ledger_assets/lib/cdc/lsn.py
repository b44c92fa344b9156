"""Log sequence numbers: the 64-bit WAL positions that order every change.

Postgres prints an LSN as two hex halves (``16/B374D848``); the change log names files by the
zero-padded 16-digit hex form so that a plain lexical sort of file names is LSN order.
"""

from __future__ import annotations

import re

_TEXT = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_HEX16 = re.compile(r"^[0-9A-F]{16}$")


class Lsn(int):
    """A WAL position. Compares and subtracts as an int (bytes of WAL)."""

    __slots__ = ()

    def __new__(cls, value: int) -> Lsn:
        if not 0 <= value < 1 << 64:
            raise ValueError(f"LSN {value} is outside 0..2^64-1")
        return super().__new__(cls, value)

    @classmethod
    def parse(cls, text: str) -> Lsn:
        """Parse Postgres' ``XXXXXXXX/XXXXXXXX`` form.

        Raises:
            ValueError: when ``text`` is not an LSN.
        """
        match = _TEXT.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not an LSN (expected the form 16/B374D848)")
        return cls((int(match[1], 16) << 32) | int(match[2], 16))

    @classmethod
    def from_hex16(cls, text: str) -> Lsn:
        """Parse the zero-padded 16-digit form used in change-log file names.

        Raises:
            ValueError: when ``text`` is not 16 upper-case hex digits.
        """
        if _HEX16.match(text) is None:
            raise ValueError(f"{text!r} is not a 16-digit upper-case hex LSN")
        return cls(int(text, 16))

    @property
    def hex16(self) -> str:
        """Zero-padded upper-case hex, so names sort in LSN order."""
        return f"{int(self):016X}"

    def __str__(self) -> str:
        return f"{int(self) >> 32:X}/{int(self) & 0xFFFFFFFF:X}"

    def __repr__(self) -> str:
        return f"Lsn({self})"
