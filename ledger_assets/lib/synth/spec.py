"""What to generate: :class:`SeedSpec`, and the tenant profiles (zone, currency) it draws from."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

#: (IANA zone, default currency) given to the first tenants in this order, so that any spec with
#: at least ``len(COVERAGE)`` tenants covers: DST in both hemispheres (New York, London,
#: Sydney, Santiago, Auckland), UTC+13/+14 (Tongatapu, Kiritimati; Auckland in its summer), a
#: non-hour offset (Kathmandu +5:45), and 0-, 2- and 3-decimal currencies (jpy/clp, usd/...,
#: kwd/bhd).
COVERAGE: tuple[tuple[str, str], ...] = (
    ("America/New_York", "usd"),
    ("Europe/London", "gbp"),
    ("Australia/Sydney", "aud"),
    ("America/Santiago", "clp"),
    ("Pacific/Auckland", "nzd"),
    ("Asia/Tokyo", "jpy"),
    ("Asia/Kuwait", "kwd"),
    ("Asia/Kathmandu", "npr"),
    ("Pacific/Tongatapu", "top"),
    ("Europe/Berlin", "eur"),
    ("Pacific/Kiritimati", "aud"),
    ("America/Los_Angeles", "usd"),
)

#: Further tenants draw from these with the given weights (an SMB fintech skewed to US/EU).
POPULATION: tuple[tuple[str, str, float], ...] = (
    ("America/New_York", "usd", 18),
    ("America/Chicago", "usd", 10),
    ("America/Los_Angeles", "usd", 10),
    ("America/Toronto", "cad", 5),
    ("Europe/London", "gbp", 10),
    ("Europe/Berlin", "eur", 7),
    ("Europe/Paris", "eur", 6),
    ("Australia/Sydney", "aud", 5),
    ("Pacific/Auckland", "nzd", 3),
    ("Asia/Tokyo", "jpy", 4),
    ("Asia/Seoul", "krw", 2),
    ("America/Santiago", "clp", 2),
    ("Asia/Kuwait", "kwd", 2),
    ("Asia/Bahrain", "bhd", 1),
    ("Asia/Kathmandu", "npr", 1),
    ("Pacific/Tongatapu", "top", 1),
    ("Asia/Singapore", "sgd", 3),
)

#: Minor units worth about one US dollar: scales amounts and fixed fees per currency so a
#: yen tenant charges ~5,000 JPY where a dollar tenant charges ~35 USD.
USD_MINOR: dict[str, float] = {
    "usd": 100, "eur": 92, "gbp": 79, "cad": 137, "aud": 152, "nzd": 168, "sgd": 134,
    "jpy": 150, "krw": 1380, "clp": 950, "kwd": 308, "bhd": 377, "npr": 13300, "top": 236,
}  # fmt: skip


@dataclass(frozen=True)
class SeedSpec:
    """A deterministic description of a synthetic system of record.

    The same spec always produces the same rows. ``target_rows`` is met approximately (Poisson
    arrivals): it sets the charge rate, from which refunds, disputes, balance transactions,
    payouts and Plaid transactions follow by the ratios below.

    Attributes:
        seed: the random seed.
        tenants: number of tenants (merchants); sizes are log-normal with ``tenant_size_sigma``.
        start: first local day of activity (every tenant's own zone).
        days: number of local days of activity.
        target_rows: approximate total rows across all tables.
        plaid_per_charge: Plaid bank transactions per Stripe charge.
        failed_rate: share of charges that fail (no balance transaction).
        refund_rate: share of successful charges with at least one refund.
        dispute_rate: share of successful, unrefunded charges that are disputed.
        late_dispute_share: share of disputes opened 91-180 days after their charge.
        tenant_size_sigma: sigma of the log-normal tenant size distribution.
    """

    seed: int = 20240601
    tenants: int = 12
    start: date = date(2025, 2, 1)
    days: int = 120
    target_rows: int = 100_000
    plaid_per_charge: float = 0.4
    failed_rate: float = 0.03
    refund_rate: float = 0.05
    dispute_rate: float = 0.006
    late_dispute_share: float = 0.25
    tenant_size_sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.tenants < 1:
            raise ValueError(f"tenants must be >= 1, got {self.tenants}")
        if self.days < 1:
            raise ValueError(f"days must be >= 1, got {self.days}")
        if self.target_rows < 1:
            raise ValueError(f"target_rows must be >= 1, got {self.target_rows}")
        for name in ("failed_rate", "refund_rate", "dispute_rate", "late_dispute_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.plaid_per_charge < 0:
            raise ValueError(f"plaid_per_charge must be >= 0, got {self.plaid_per_charge}")

    @property
    def end(self) -> date:
        """The first local day after the activity window (exclusive end)."""
        return self.start + timedelta(days=self.days)

    @classmethod
    def demo(cls, seed: int = 20240601, end: date | None = None) -> SeedSpec:
        """12 tenants, 120 days, ~100k rows: loads in a few seconds.

        120 rather than 90 days so that disputes arriving more than 90 days after their charge
        exist; the dispute rate is raised so a demo has enough of them.

        Args:
            seed: the random seed.
            end: the first day after the window (e.g. today for a live demo); by default the
                window is Feb-May 2025, which holds DST changes in both hemispheres.
        """
        days = 120
        start = date(2025, 2, 1) if end is None else end - timedelta(days=days)
        return cls(
            seed=seed, tenants=12, start=start, days=days, target_rows=100_000, dispute_rate=0.02
        )

    def with_seed(self, seed: int) -> SeedSpec:
        """The same spec with another seed."""
        return replace(self, seed=seed)

    @classmethod
    def scale(
        cls, total_rows: int, tenants: int = 1000, years: float = 3.0, seed: int = 20240601
    ) -> SeedSpec:
        """A benchmark spec: ``total_rows`` over ``tenants`` and ``years``, ending 2025-12-31."""
        days = max(1, round(365.25 * years))
        end = date(2026, 1, 1)
        return cls(
            seed=seed,
            tenants=tenants,
            start=end - timedelta(days=days),
            days=days,
            target_rows=total_rows,
        )
