"""Arrow's allocator for every process that runs this code: jemalloc, where pyarrow ships it.

pyarrow's Linux wheels default to mimalloc. On our 2-core machines a fresh process paid for
that on its first large allocations: applying 1M captured changes (``python -m bench cdc``) took
12-14 s with mimalloc and 8.5 s with jemalloc, run after each other; the first
``combine_chunks`` of the change table alone took 2.1-2.7 s against 0.3 s, and only 0.07 s
when the process repeated it. Every Dagster run is such a fresh process, so the default
matters there most.

An ``ARROW_DEFAULT_MEMORY_POOL`` set by the user (``system``, ``mimalloc``, ``jemalloc``) wins.
"""

from __future__ import annotations

import contextlib
import os

import pyarrow as pa


def use_jemalloc_unless_configured() -> str:
    """Make jemalloc Arrow's default pool unless the environment chose one; the backend used."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        # A pyarrow built without jemalloc keeps its default.
        with contextlib.suppress(NotImplementedError):
            pa.set_memory_pool(pa.jemalloc_memory_pool())
    return str(pa.default_memory_pool().backend_name)
