"""ledger-assets: a Dagster-orchestrated reporting lake beside a Postgres system of record."""

from ledger_assets.lib.arrow_memory import use_jemalloc_unless_configured

# Process-wide, before any Arrow buffer is allocated: every entry point (Dagster's code
# location and run workers, the CLI, tests, benchmarks) imports this package first.
use_jemalloc_unless_configured()
