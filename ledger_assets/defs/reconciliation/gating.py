"""Gating: whether the marts of a day are built while reconciliation says its lake is wrong.

The marts run reads the latest reconciliation result of every partition in its window
(``lib.marts.contracts.open_mismatches``). With ``blocking`` (the default) a window holding an
open mismatch is not built, so the dashboard keeps the last numbers that were proven; with
``warn`` it is built and the run says which partitions are in doubt. A later passing check
of those partitions (the next cycle, a re-check, an auto-heal) clears the gate.
"""

from datetime import date

import dagster as dg

from ledger_assets.defs.reconciliation.resources import ReconciliationResource
from ledger_assets.lib.marts.contracts import open_mismatches

#: Lines of detail in the failure or warning; the rest is counted.
_SHOWN = 20


def gate_marts_window(
    log: dg.DagsterLogManager, reconciliation: ReconciliationResource, start: date, end: date
) -> "dict[str, dg.RawMetadataValue]":
    """Raise ``dg.Failure`` (blocking) or warn (warn) when ``[start, end)`` has open mismatches.

    Returns metadata for the marts run: the gate's state and the partitions in doubt.
    """
    open_rows = open_mismatches(reconciliation.results_dir, start, end).to_pylist()
    if not open_rows:
        return {"reconciliation_gate": "clear"}
    lines = [
        f"{r['table_name']} tenant {r['tenant_id']} {r['local_date']} {r['currency']} "
        f"(check run {r['check_run_id']})"
        for r in open_rows
    ]
    shown = lines[:_SHOWN] + (
        [f"... and {len(lines) - _SHOWN} more"] if len(lines) > _SHOWN else []
    )
    mode = reconciliation.gating
    message = f"reconciliation has {len(lines)} open mismatch(es) in {start}..{end}: " + "; ".join(
        shown
    )
    if mode == "blocking":
        raise dg.Failure(
            description=message + " — the marts are not built (LEDGER_RECONCILIATION_GATING="
            "blocking); fix the lake (auto-heal, or materialize the partition) or set warn",
            metadata={"open_mismatches": shown},
        )
    log.warning(message + " — building anyway (LEDGER_RECONCILIATION_GATING=warn)")
    return {"reconciliation_gate": "warned", "open_mismatches": shown}
