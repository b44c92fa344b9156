"""Benchmark harness: ``uv run python -m bench <workload>... [--rows N]`` (see bench.core)."""
