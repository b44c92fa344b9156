"""``event_log``: what recording a run's events costs, pooled storage vs Dagster's stock one.

Two local instances side by side, in this process, on the same disk: one with the stock
``storage: sqlite`` (a new engine and connection per event, every commit fsynced), one with
``dagster.yaml``'s storage sections as they are
(:class:`~ledger_assets.defs.event_storage.PooledSqliteEventLogStorage` for the event log).
Runs alternate between them, and the median of ``REPEATS`` is reported, for two shapes:

* a job whose one op logs 300 messages: the cost of one event;
* a run shaped like the one-day marts run: 24 assets and 31 asset checks in one multi-asset
  step, so planned events, materializations and check evaluations, each mirrored in the index
  shard, as ``marts_job`` records them (only the dbt work is left out).
"""

import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from bench.core import Context, Figure, local_instance, workload

REPEATS = 7
LOG_LINES = 300
MART_ASSETS = 24
MART_CHECKS = 31

STOCK = "storage:\n  sqlite:\n    base_dir: {base}\n"


@dg.op
def chatty(context: dg.OpExecutionContext) -> None:
    for line in range(LOG_LINES):
        context.log.info(f"line {line}")


@dg.job
def logging_job() -> None:
    chatty()


_SPECS = [dg.AssetSpec(f"mart_{i}") for i in range(MART_ASSETS)]
_CHECKS = [
    dg.AssetCheckSpec(f"check_{i}", asset=f"mart_{i % MART_ASSETS}") for i in range(MART_CHECKS)
]


@dg.multi_asset(specs=_SPECS, check_specs=_CHECKS)
def marts_shaped() -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    for spec in _SPECS:
        yield dg.MaterializeResult(asset_key=spec.key, metadata={"rows": 1})
    for check in _CHECKS:
        yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)


def _seconds(run: object) -> float:
    assert callable(run)
    started = time.perf_counter()
    assert run().success
    return time.perf_counter() - started


@workload("event_log")
def event_log(ctx: Context) -> list[Figure]:
    del ctx  # no database: the storage under test is a local folder
    with tempfile.TemporaryDirectory(prefix="bench_event_log_") as tmp:
        home = Path(tmp)
        stock = local_instance(home / "stock", STOCK.format(base=home / "stock" / "storage"))
        pooled = local_instance(home / "pooled")
        timings: dict[tuple[str, str], list[float]] = {}
        for instance in (stock, pooled):  # warm both up
            logging_job.execute_in_process(instance=instance)
            dg.materialize([marts_shaped], instance=instance)
        for _ in range(REPEATS):
            for name, instance in (("stock", stock), ("pooled", pooled)):
                timings.setdefault((name, "log"), []).append(
                    _seconds(lambda i=instance: logging_job.execute_in_process(instance=i))
                )
                timings.setdefault((name, "marts"), []).append(
                    _seconds(lambda i=instance: dg.materialize([marts_shaped], instance=i))
                )
        stock.dispose()
        pooled.dispose()
    med = {key: statistics.median(values) for key, values in timings.items()}
    per_event = 1000 / (LOG_LINES + 10)  # the op's lines plus the run's own ~10 events
    return [
        Figure(
            f"job logging {LOG_LINES} lines, ms per event",
            med["pooled", "log"] * per_event, "ms", med["stock", "log"] * per_event,
            higher_is_better=False,
        ),
        Figure(
            f"marts-shaped run ({MART_ASSETS} assets, {MART_CHECKS} checks)",
            med["pooled", "marts"], "s", med["stock", "marts"], higher_is_better=False,
        ),
    ]  # fmt: skip
