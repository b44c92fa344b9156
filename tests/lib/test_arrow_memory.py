"""Importing the package picks Arrow's allocator once per process (see lib/arrow_memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_BACKEND = "import ledger_assets, pyarrow; print(pyarrow.default_memory_pool().backend_name)"


def _backend_in_fresh_process(pool: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if pool is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = pool
    done = subprocess.run(
        [sys.executable, "-c", _BACKEND], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_jemalloc_is_the_default_pool() -> None:
    assert _backend_in_fresh_process(None) == "jemalloc"


@pytest.mark.parametrize("pool", ["system", "mimalloc"])
def test_a_pool_chosen_in_the_environment_wins(pool: str) -> None:
    assert _backend_in_fresh_process(pool) == pool
