"""Workloads register themselves on import; add new modules to this list."""

from bench.workloads import (
    cdc,
    cdc_live,
    dashboard,
    event_log,
    late_dispute,
    marts,
    marts_at_scale,
    partitions,
    reconcile,
    seed_load,
    snapshot,
    stripe_backfill,
)

__all__ = [
    "cdc",
    "cdc_live",
    "dashboard",
    "event_log",
    "late_dispute",
    "marts",
    "marts_at_scale",
    "partitions",
    "reconcile",
    "seed_load",
    "snapshot",
    "stripe_backfill",
]
