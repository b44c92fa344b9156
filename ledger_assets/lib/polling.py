"""Wait for something to happen by asking again and again, up to a deadline."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    check: Callable[[], T | None],
    *,
    seconds: float,
    every: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T | None:
    """``check()`` until it returns something other than None, for at most ``seconds``.

    The first check is immediate and a last one is made at the deadline, so ``seconds=0`` is a
    single check. Returns the first non-None result, or None when the time ran out.
    """
    deadline = clock() + seconds
    while True:
        result = check()
        if result is not None:
            return result
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(every, left))
