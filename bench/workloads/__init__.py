"""Workloads register themselves on import; add new modules to this list."""

from bench.workloads import seed_load, stripe_backfill

__all__ = ["seed_load", "stripe_backfill"]
