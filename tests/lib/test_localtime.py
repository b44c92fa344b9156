from datetime import UTC, date, datetime, timedelta

import pytest

from ledger_assets.lib.localtime import day_window, local_date, local_date_of_epoch


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "day", "start", "hours"),
    [
        ("America/New_York", date(2024, 3, 10), utc(2024, 3, 10, 5), 23),  # spring forward
        ("America/New_York", date(2024, 11, 3), utc(2024, 11, 3, 4), 25),  # fall back
        ("Europe/London", date(2024, 3, 31), utc(2024, 3, 31, 0), 23),
        ("Australia/Sydney", date(2024, 10, 6), utc(2024, 10, 5, 14), 23),  # southern spring
        ("Australia/Sydney", date(2024, 4, 7), utc(2024, 4, 6, 13), 25),
        # Santiago skips local midnight (00:00 -> 01:00): the day starts at the transition.
        ("America/Santiago", date(2024, 9, 8), utc(2024, 9, 8, 4), 23),
        ("Asia/Kathmandu", date(2025, 1, 1), utc(2024, 12, 31, 18, 15), 24),
        ("Pacific/Kiritimati", date(2025, 1, 1), utc(2024, 12, 31, 10), 24),
        ("Pacific/Auckland", date(2025, 1, 1), utc(2024, 12, 31, 11), 24),  # +13 in summer
    ],
)
def test_day_window(zone: str, day: date, start: datetime, hours: int) -> None:
    lo, hi = day_window(day, zone)
    assert lo == start
    assert hi - lo == timedelta(hours=hours)
    assert lo.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "zone",
    ["America/New_York", "Australia/Sydney", "America/Santiago", "Asia/Kathmandu",
     "Pacific/Tongatapu", "Pacific/Kiritimati", "Australia/Lord_Howe", "UTC"],
)  # fmt: skip
def test_windows_tile_the_timeline(zone: str) -> None:
    day = date(2024, 1, 1)
    previous_end = None
    for _ in range(366):
        lo, hi = day_window(day, zone)
        if previous_end is not None:
            assert lo == previous_end
        assert local_date(lo, zone) == day
        assert local_date(hi - timedelta(microseconds=1), zone) == day
        assert local_date(hi, zone) == day + timedelta(days=1)
        previous_end = hi
        day += timedelta(days=1)


def test_local_date() -> None:
    instant = utc(2025, 1, 1, 3, 30)
    assert local_date(instant, "America/New_York") == date(2024, 12, 31)
    assert local_date(instant, "Pacific/Kiritimati") == date(2025, 1, 1)
    assert local_date_of_epoch(instant.timestamp(), "America/New_York") == date(2024, 12, 31)


def test_naive_instant_is_rejected() -> None:
    with pytest.raises(ValueError, match="naive"):
        local_date(datetime(2025, 1, 1), "UTC")
