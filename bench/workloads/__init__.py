"""Workloads register themselves on import; add new modules to this list."""

from bench.workloads import cdc, dashboard, marts, seed_load, stripe_backfill

__all__ = ["cdc", "dashboard", "marts", "seed_load", "stripe_backfill"]
