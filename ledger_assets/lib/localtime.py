"""Account-local days: an instant plus an IANA zone gives a date; a date gives a UTC window.

A tenant's "day" is a calendar date in its IANA zone. A day is not 24 hours: on DST changes it
is 23 or 25 hours (some zones shift by 30 minutes), so the UTC window of a day is always built
from *two* local midnights, ``[midnight(day), midnight(day + 1))``, never ``start + 24h``.

Converting UTC to a local date is unambiguous. Converting a local midnight to UTC can hit a gap
(America/Santiago skips 00:00-01:00 when DST starts); ``zoneinfo`` then uses the offset from
before the transition (PEP 495, ``fold=0``), which is exactly the first instant of the day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` for an IANA name (cached; raises ``ZoneInfoNotFoundError``)."""
    return ZoneInfo(name)


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return zone(tz) if isinstance(tz, str) else tz


def local_date(instant: datetime, tz: str | ZoneInfo) -> date:
    """The calendar date in ``tz`` at ``instant``.

    Raises:
        ValueError: ``instant`` is naive (it would silently be read as the host's local time).
    """
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"instant {instant!r} is naive; pass an aware datetime (UTC)")
    return instant.astimezone(_zone(tz)).date()


def local_date_of_epoch(seconds: int | float, tz: str | ZoneInfo) -> date:
    """The calendar date in ``tz`` at a Unix timestamp (Stripe's ``created``)."""
    return datetime.fromtimestamp(seconds, _zone(tz)).date()


def local_midnight(day: date, tz: str | ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``tz``, as an aware UTC datetime."""
    # fold=0 resolves a midnight that falls in a DST gap to the transition instant, which is
    # when that date begins; an ambiguous midnight resolves to its first occurrence.
    local = datetime.combine(day, time(0), tzinfo=_zone(tz))
    return local.astimezone(UTC)


def day_window(day: date, tz: str | ZoneInfo) -> tuple[datetime, datetime]:
    """The half-open UTC window ``[start, end)`` of the local calendar ``day`` in ``tz``.

    Returns:
        Two aware UTC datetimes; ``end - start`` is 23, 24 or 25 hours (or 23.5/24.5 where a
        zone shifts by 30 minutes).
    """
    return local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
