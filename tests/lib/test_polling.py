"""poll: immediate first check, a last check at the deadline, never past it."""

from ledger_assets.lib.polling import poll


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_first_result_without_sleeping_when_it_is_ready() -> None:
    clock = FakeClock()
    assert poll(lambda: 7, seconds=4, every=0.2, clock=clock, sleep=clock.sleep) == 7
    assert clock.sleeps == []


def test_checks_until_a_result_appears() -> None:
    clock = FakeClock()
    answers = iter([None, None, "landed"])
    result = poll(lambda: next(answers), seconds=4, every=0.5, clock=clock, sleep=clock.sleep)
    assert result == "landed"
    assert clock.sleeps == [0.5, 0.5]


def test_gives_up_at_the_deadline_after_a_last_check() -> None:
    clock = FakeClock()
    checked_at: list[float] = []

    def never() -> None:
        checked_at.append(clock.now)

    assert poll(never, seconds=1.0, every=0.4, clock=clock, sleep=clock.sleep) is None
    assert checked_at == [0.0, 0.4, 0.8, 1.0]
    assert sum(clock.sleeps) == 1.0


def test_zero_seconds_is_one_check() -> None:
    calls: list[None] = []
    assert poll(lambda: calls.append(None), seconds=0, every=1) is None
    assert len(calls) == 1
