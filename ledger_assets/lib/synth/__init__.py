"""Deterministic synthetic data for the system of record, loaded with binary COPY.

Entry point: :func:`ledger_assets.lib.synth.load.seed_database` with a
:class:`~ledger_assets.lib.synth.spec.SeedSpec` (``SeedSpec.demo()`` or ``SeedSpec.scale(...)``).
"""
