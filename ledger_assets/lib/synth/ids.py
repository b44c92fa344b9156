"""Stripe-style ids from counters, vectorised: ``ch_`` + fixed-width lower-case base 36.

Ids are counters so that rows loaded in order have ascending primary keys: every btree insert
then lands on the rightmost leaf (Postgres' "fastpath" for monotonically increasing keys) and
the indexes stay compact. Lower-case base 36 of a fixed width sorts the same way as the
number under both the C and the usual linguistic collations.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Digits per id; 36^10 ~ 3.7e15 ids per prefix.
ID_DIGITS = 10
_ALPHABET = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
# Two base-36 digits at a time: the 1296 two-byte pairs, as uint16 so one gather moves both.
_PAIRS = np.stack([np.repeat(_ALPHABET, 36), np.tile(_ALPHABET, 36)], axis=1).copy()
_PAIRS16 = _PAIRS.view(np.uint16).ravel()


def id_width(prefix: str) -> int:
    """Byte width of ids with ``prefix``."""
    return len(prefix) + ID_DIGITS


def encode_ids(prefix: str, numbers: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    """Ids for ``numbers`` as a ``(len(numbers), id_width(prefix))`` uint8 matrix.

    Args:
        prefix: the Stripe-style prefix including the underscore, e.g. ``"ch_"``.
        numbers: non-negative counters.
    """
    num = np.asarray(numbers, dtype=np.int64)
    n, p = len(num), len(prefix)
    out = np.empty((n, p + ID_DIGITS), dtype=np.uint8)
    out[:, :p] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    digits = np.empty((n, ID_DIGITS // 2), dtype=np.uint16)
    for k in range(ID_DIGITS // 2 - 1, -1, -1):
        num, pair = np.divmod(num, 1296)
        digits[:, k] = _PAIRS16[pair]
    out[:, p:] = digits.view(np.uint8).reshape(n, ID_DIGITS)
    return out


def ids_as_str(matrix: npt.NDArray[np.uint8]) -> list[str]:
    """Decode an id matrix to Python strings (tests and small tables only)."""
    return [row.tobytes().decode("ascii") for row in matrix]
