"""The lake on S3 (moto's server on loopback): the same code paths as a local lake.

Seed, CDC apply, reconciliation and the dbt marts run against ``s3://<bucket>/lake``; the
writer locks and the change log stay on local disk (ARCHITECTURE.md §6 "Storage").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from psycopg.conninfo import conninfo_to_dict

from ledger_assets.defs.resources import LakeResource
from ledger_assets.lib.cdc import CaptureConfig, ChangeCapture
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.compact import compact
from ledger_assets.lib.lake.drift import drift_between, lake_file_stats
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.storage import LakeStorageError, S3Settings
from ledger_assets.lib.lake.store import parquet_bytes, write_partition
from ledger_assets.lib.lake.sync import apply_landed, build_lake, lake_tables, read_lake_state
from ledger_assets.lib.lake.versions import create_lake_view_as_of
from ledger_assets.lib.marts.contracts import results_dir
from ledger_assets.lib.marts.prepare import prepare_marts_database
from ledger_assets.lib.reconcile import ReconcileScope, reconcile
from ledger_assets.lib.sor.pgcluster import find_free_port
from ledger_assets.lib.synth.load import seed_database
from tests.conftest import world_searchable_tmpdir
from tests.dbt.conftest import copy_project
from tests.disputes.test_versions import NEW_DAY, OLD_DAY, TABLE, at_watermark, rows, snapshot
from tests.lake.test_sync import assert_lake_equals_postgres
from tests.s3.conftest import SPEC, S3Lake, build_s3_lake, create_bucket, etag, object_bytes, s3_env

CHARGES = "stripe_charges"
FULL = ReconcileScope("full")


def test_a_lake_built_on_s3_equals_postgres_and_lives_in_the_bucket(s3_lake: S3Lake) -> None:
    assert_lake_equals_postgres(s3_lake.dsn, s3_lake.layout)
    keys = set(object_bytes(s3_lake.layout))
    assert "_state/lake.json" in keys
    assert sum(k.startswith(f"{CHARGES}/base/local_date=") for k in keys) >= 30
    assert not read_lake_state(s3_lake.layout).seeding
    # On local disk: only the writer locks and the change log, no lake file.
    local = s3_lake.layout.local
    on_disk = {p.relative_to(local).parts[0] for p in local.rglob("*.parquet")}
    assert on_disk == {"_changelog"}
    assert (local / CHARGES / ".lock").exists()


def test_cdc_apply_on_s3_rewrites_only_the_touched_partitions(s3_lake: S3Lake) -> None:
    layout = s3_lake.layout
    before = object_bytes(layout)
    untouched = min(k for k in before if k.startswith("plaid_transactions/base/"))
    untouched_etag = etag(layout, untouched)
    with psycopg.connect(s3_lake.dsn, autocommit=True) as conn:
        conn.execute(
            "insert into ledger.stripe_charges (id, tenant_id, amount, amount_captured, "
            "amount_refunded, currency, status, paid, captured, refunded, disputed, created) "
            "values ('ch_s3_new', 1, 1234, 1234, 0, 'usd', 'succeeded', true, true, false, "
            "false, %s)",
            (datetime(2025, 2, 10, 12, tzinfo=UTC),),
        )
        conn.execute(
            "update ledger.stripe_charges set amount_refunded = amount, refunded = true "
            "where id in (select id from ledger.stripe_charges order by id limit 5)"
        )
        # A row that moves to another local day, and a delete.
        conn.execute(
            "update ledger.stripe_charges set created = created - interval '3 days' "
            "where id = (select max(id) from ledger.stripe_charges where status = 'failed')"
        )
        conn.execute(
            "delete from ledger.stripe_refunds "
            "where id = (select min(id) from ledger.stripe_refunds)"
        )
    with ChangeCapture(s3_lake.config) as capture:
        capture.start()
        capture.run(max_seconds=30)
    result = apply_landed(s3_lake.dsn, layout, s3_lake.config.changelog_dir)
    assert result.changes >= 8
    assert_lake_equals_postgres(s3_lake.dsn, layout)
    after = object_bytes(layout)
    written = {
        layout.overlay_file(w.key).relative_to(layout.path)
        for writes in result.writes.values()
        for w in writes
        if w.changed
    }
    assert len(written) >= 4
    differing = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    # Every other object is byte-identical: the base files and the untouched overlays.
    assert differing == written | {"_state/lake.json"}
    assert etag(layout, untouched) == untouched_etag


def test_reconciliation_passes_on_s3_and_catches_one_cent_in_an_object(
    s3_lake: S3Lake,
) -> None:
    state_dir = s3_lake.folder / "state"
    report = reconcile(s3_lake.config, s3_lake.layout, state_dir, FULL)
    assert report.status == "pass", report.reason
    assert report.rows_compared > 1_000

    path = s3_lake.layout.base_files(CHARGES)[3]
    table = pq.read_table(path.path, filesystem=path.fs)
    row = table.slice(0, 1).to_pylist()[0]
    amount = table.schema.get_field_index("amount")
    bumped = pc.if_else(
        pc.equal(table.column("id"), row["id"]), pc.add(table.column("amount"), 1),
        table.column("amount"),
    )  # fmt: skip
    path.write_bytes(parquet_bytes(table.set_column(amount, table.schema.field(amount), bumped)))

    report = reconcile(s3_lake.config, s3_lake.layout, state_dir, FULL)
    assert report.status == "fail"
    assert set(report.mismatched_partitions()) == {(CHARGES, row["tenant_id"], row["local_date"])}
    (mismatch,) = report.mismatches
    assert mismatch.lake.amount - mismatch.postgres.amount == 1
    assert mismatch.different_keys == (row["id"],)


def _build_marts(layout: LakeLayout, dsn: str, folder: Path, env: dict[str, str]) -> Path:
    """prepare + ``dbt build`` over ``layout``; returns the marts database."""
    state_dir = folder / "state"
    with psycopg.connect(dsn) as conn:
        tables = lake_tables(conn)
    prepare_marts_database(state_dir / "marts.duckdb", layout, tables, dsn, results_dir(state_dir))
    project = copy_project(folder)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "build", "--project-dir", str(project),
         "--profiles-dir", str(project)],
        env={**os.environ, **env, "LEDGER_STATE_DIR": str(state_dir),
             "LEDGER_LAKE_ROOT": str(layout.root), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return state_dir / "marts.duckdb"


def _marts(database: Path) -> dict[str, list[tuple[object, ...]]]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        names = [
            str(r[0])
            for r in con.execute(
                "select table_name from information_schema.tables "
                "where table_schema = 'marts' and table_type = 'BASE TABLE' order by 1"
            ).fetchall()
        ]
        return {n: con.execute(f'select * from marts.marts."{n}" order by all').fetchall()
                for n in names}  # fmt: skip
    finally:
        con.close()


def test_the_marts_built_over_s3_equal_the_marts_built_over_a_local_lake(
    migrated_dsn: str, s3_settings: S3Settings
) -> None:
    seed_database(migrated_dsn, SPEC)
    folder = world_searchable_tmpdir("ledger-test-s3-marts-")
    db = conninfo_to_dict(migrated_dsn)["dbname"]
    local = LakeLayout(folder / "local" / "lake")
    local_config = CaptureConfig(
        dsn=migrated_dsn, changelog_dir=local.changelog_dir, slot_name=f"local_{db}",
        publication=f"local_{db}",
    )  # fmt: skip
    try:
        s3 = build_s3_lake(migrated_dsn, s3_settings, folder / "s3", f"s3_{db}")
        build_lake(local_config, local)
        on_s3 = _marts(_build_marts(s3.layout, migrated_dsn, folder / "s3", s3_env(s3_settings)))
        on_disk = _marts(_build_marts(local, migrated_dsn, folder / "local", {}))
        assert "daily_pnl" in on_s3
        assert len(on_s3["daily_pnl"]) > 100
        # Provenance differs by construction: each build_lake commits its own no-op update, so
        # one charge row carries a different source LSN in each lake. Every number is equal.
        assert on_s3.pop("source_positions") != on_disk.pop("source_positions")
        assert on_s3 == on_disk
    finally:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            for name in (f"s3_{db}", f"local_{db}"):
                slots.drop_slot(conn, name)
        shutil.rmtree(folder, ignore_errors=True)


def test_an_unknown_bucket_or_endpoint_fails_once_naming_the_root(
    s3_settings: S3Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = LakeLayout("s3://no-such-bucket/lake", local_dir=tmp_path, s3=s3_settings)
    with pytest.raises(
        LakeStorageError,
        match=r"^lake root s3://no-such-bucket/lake: bucket 'no-such-bucket' does not exist",
    ):
        read_lake_state(missing)

    # The resource reads the standard AWS variables; nothing listens on this port.
    port = find_free_port()
    for name, value in s3_env(s3_settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    resource = LakeResource(root="s3://lake-bucket/prefix", state_dir=str(tmp_path))
    assert resource.changelog_dir == tmp_path / "lake-local" / "_changelog"
    started = time.monotonic()
    with pytest.raises(LakeStorageError) as error:
        read_lake_state(resource.layout)
    assert time.monotonic() - started < 30
    message = str(error.value)
    assert message.startswith(
        f"lake root s3://lake-bucket/prefix: S3 at http://127.0.0.1:{port} cannot be used"
    )
    assert "test-secret" not in message


def test_versions_compaction_and_drift_on_s3(s3_settings: S3Settings, tmp_path: Path) -> None:
    layout = LakeLayout(
        f"s3://{create_bucket(s3_settings)}/lake", local_dir=tmp_path, s3=s3_settings
    )
    other = rows(OLD_DAY, ("ch_x", 7, 0)).set_column(1, "tenant_id", pa.array([2], pa.int32()))
    seeded = pa.concat_tables([rows(OLD_DAY, ("ch_a", 100, 0), ("ch_b", 200, 0)), other])
    layout.base_file(TABLE.name, OLD_DAY).write_bytes(parquet_bytes(seeded.cast(TABLE.schema)))
    key = PartitionKey(TABLE.name, 1, OLD_DAY)
    con = duckdb.connect()
    at_watermark(layout, 1000)
    before = snapshot(con, create_lake_view(con, layout, TABLE, name="v1000"))
    files = lake_file_stats(layout, [TABLE.name])
    assert write_partition(
        layout, TABLE, key, rows(OLD_DAY, ("ch_a", 90, 1600), ("ch_b", 200, 0))
    ).changed
    drift = drift_between(files, lake_file_stats(layout, [TABLE.name]))
    assert drift.partitions == {(TABLE.name, 1, OLD_DAY)}
    at_watermark(layout, 2000)  # a report reads the overlay
    read = snapshot(con, create_lake_view(con, layout, TABLE, name="v2000"))
    time.sleep(1.1)  # S3 times have one-second precision: the compaction comes visibly later
    report = compact(layout, TABLE, before=NEW_DAY)
    assert (report.overlays_folded, layout.overlay_files(TABLE.name)) == (1, [])
    assert snapshot(con, create_lake_view(con, layout, TABLE, name="compacted")) == read
    # A late change to the compacted day before the next report: what the report read is kept.
    assert write_partition(
        layout, TABLE, key, rows(OLD_DAY, ("ch_a", 80, 2500), ("ch_b", 200, 0))
    ).changed
    at_watermark(layout, 3000)
    for watermark, expected in ((1000, before), (2000, read)):
        view = create_lake_view_as_of(con, layout, TABLE, Lsn(watermark), name=f"a{watermark}")
        assert snapshot(con, view) == expected, watermark
