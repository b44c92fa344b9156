"""The web dashboard over the published dbt marts (see :mod:`ledger_assets.dashboard.app`)."""
