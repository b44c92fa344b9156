"""Which disputes a lake rewrite came from, so the Dagster UI can tell a late dispute's story.

A dispute is ingested in one transaction together with its balance transactions and the
``disputed`` flag of its charge (``ingest.stripe_writer``), so every row it writes carries that
transaction's commit LSN in ``_lsn``. A rewritten partition is linked to a dispute when it holds
a row written by a commit that also wrote the dispute, and that row is the dispute itself, one
of its balance transactions (``source`` = the dispute id) or its charge. Matching on the row,
not only on the commit, keeps an unrelated charge applied in the same webhook batch unlinked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.cdc.changelog import list_batches, read_changes
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.schema import ROW_LSN, LakeTable
from ledger_assets.lib.lake.store import PartitionWrite, read_partitions

DISPUTES = "stripe_disputes"
CHARGES = "stripe_charges"
#: The column of each table that names a dispute (its charge's id, for charges).
_LINK_COLUMN = {DISPUTES: "id", "stripe_balance_transactions": "source", CHARGES: "id"}


@dataclass(frozen=True)
class DisputeChange:
    dispute_id: str
    charge_id: str
    commit_lsn: int


def dispute_changes(changelog_dir: Path, after: Lsn, through: Lsn) -> list[DisputeChange]:
    """Disputes inserted or updated by the landed batches in ``(after, through]``."""
    manifests = [r.read() for r in list_batches(changelog_dir, after=after) if r.end <= through]
    found = []
    for part in read_changes(changelog_dir, manifests, DISPUTES):
        written = part.filter(pc.is_in(part.column("op"), pa.array(["insert", "update"])))
        new = written.column("new")
        found += [
            DisputeChange(str(d), str(c), int(lsn))
            for d, c, lsn in zip(
                pc.struct_field(new, "id").to_pylist(),
                pc.struct_field(new, "charge").to_pylist(),
                written.column("commit_lsn").to_pylist(),
                strict=True,
            )
        ]
    return found


@dataclass(frozen=True)
class RewriteLineage:
    """Where a partition's new content came from."""

    #: The commit LSNs after the previous watermark that the new content holds (None: the
    #: rewrite only removed rows).
    lsn_from: Lsn | None
    lsn_to: Lsn | None
    disputes: tuple[str, ...]


def rewrite_lineage(
    layout: LakeLayout,
    lake_table: LakeTable,
    write: PartitionWrite,
    after: Lsn,
    disputes: Sequence[DisputeChange],
) -> RewriteLineage:
    """The new commits in ``write`` (past watermark ``after``) and the disputes among them."""
    new = [lsn for lsn in write.lsns if lsn > after]
    if not new:
        return RewriteLineage(None, None, ())
    lineage = RewriteLineage(Lsn(min(new)), Lsn(max(new)), ())
    column = _LINK_COLUMN.get(lake_table.name)
    commits = {d.commit_lsn for d in disputes} & set(new)
    if column is None or not commits:
        return lineage
    rows = read_partitions(layout, lake_table, [write.key])
    rows = rows.filter(pc.is_in(rows.column(ROW_LSN), pa.array(sorted(commits), pa.int64())))
    values = {str(v) for v in rows.column(column).to_pylist()}
    linked = {
        d.dispute_id
        for d in disputes
        if d.commit_lsn in commits
        and (d.charge_id if lake_table.name == CHARGES else d.dispute_id) in values
    }
    return RewriteLineage(lineage.lsn_from, lineage.lsn_to, tuple(sorted(linked)))
