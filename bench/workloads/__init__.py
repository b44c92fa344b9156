"""Workloads register themselves on import; add new modules to this list."""

from bench.workloads import cdc, dashboard, late_dispute, marts, seed_load, stripe_backfill

__all__ = ["cdc", "dashboard", "late_dispute", "marts", "seed_load", "stripe_backfill"]
