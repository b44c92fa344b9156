"""The Dagster wiring: partitions, lineage keys, a real materialization via DbtCliResource."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
import pytest
from dagster_dbt import DbtCliResource
from dagster_dbt.compat import DBT_PYTHON_VERSION

from ledger_assets.defs.dbt.assets import (
    MANIFEST_PATH,
    MartsConfig,
    dbt_build_args,
    lake_audit_args,
    ledger_marts,
)
from ledger_assets.defs.dbt.resources import DBT_PROJECT_DIR, dbt_cli, marts_run_resources
from ledger_assets.defs.resources import LakeResource
from ledger_assets.lib.marts.contracts import results_dir, write_results
from ledger_assets.lib.marts.export import current_snapshot
from ledger_assets.lib.marts.project import (
    project_fingerprint,
    views_built_from,
    window_independent_views,
)
from ledger_assets.lib.sor.catalog import MIRRORED_TABLES
from tests.dbt.conftest import Lake

DAY = dg.TimeWindow(datetime(2025, 3, 10), datetime(2025, 3, 11))


def test_a_partition_window_becomes_dbt_vars() -> None:
    args = dbt_build_args(DAY, MartsConfig())
    assert args[:3] == ["build", "--vars", json.dumps({"end_date": "2025-03-11",
                                                       "start_date": "2025-03-10"})]  # fmt: skip
    assert args[-2:] == ["--exclude-resource-type", "unit_test"]


def test_a_full_refresh_drops_the_window() -> None:
    args = dbt_build_args(DAY, MartsConfig(full_refresh=True, unit_tests=True))
    assert args == ["build", "--exclude", "tag:lake_audit", "--full-refresh"]
    # ... and rebuilds every view.
    assert dbt_build_args(DAY, MartsConfig(full_refresh=True), ["stg_a"]) == [
        "build", "--exclude", "tag:lake_audit", "--full-refresh",
        "--exclude-resource-type", "unit_test",
    ]  # fmt: skip


def test_only_a_build_of_everything_leaves_the_lake_audit_for_after_publishing() -> None:
    assert dbt_build_args(None, MartsConfig())[:3] == ["build", "--exclude", "tag:lake_audit"]
    assert "tag:lake_audit" not in dbt_build_args(DAY, MartsConfig())
    assert lake_audit_args() == ["test", "--selector", "lake_audit", "--threads", "1"]
    # The audit is the staging models' tests over the lake's tables.
    manifest = json.loads(MANIFEST_PATH.read_text())
    audit = {
        node["attached_node"].split(".")[-1]
        for node in manifest["nodes"].values()
        if "lake_audit" in node["tags"]
    }
    assert {"stg_stripe__charges", "stg_stripe__balance_transactions"} <= audit
    assert all(name.startswith(("stg_stripe__", "stg_plaid__")) for name in audit)


def test_a_windowed_run_excludes_the_views_it_keeps() -> None:
    args = dbt_build_args(DAY, MartsConfig(), ["stg_a", "stg_b"])
    assert args[3:5] == ["--exclude", "stg_a stg_b"]


def _node(name: str, materialized: str, sql: str, macros: list[str]) -> tuple[str, Any]:
    return f"model.p.{name}", {
        "name": name, "resource_type": "model", "config": {"materialized": materialized},
        "raw_code": sql, "depends_on": {"macros": macros},
    }  # fmt: skip


def _macro(name: str, path: str, sql: str, macros: list[str]) -> tuple[str, Any]:
    return f"macro.p.{name}", {
        "original_file_path": path,
        "macro_sql": sql,
        "depends_on": {"macros": macros},
    }


def test_views_that_read_the_window_are_never_kept() -> None:
    manifest = {
        "macros": dict([
            _macro("in_window", "macros/date_window.sql", "{{ var('start_date') }}", []),
            _macro("helper", "macros/other.sql", "{{ in_window('d') }}", ["macro.p.in_window"]),
            _macro("days", "macros/days.sql", "{{ var('end_date') }}", []),
            _macro("money", "macros/money.sql", "{{ x }} / 100", []),
        ]),
        "nodes": dict([
            _node("plain", "view", "select {{ money('a') }}", ["macro.p.money"]),
            _node("via_helper", "view", "select {{ helper() }}", ["macro.p.helper"]),
            _node("via_var_macro", "view", "select {{ days() }}", ["macro.p.days"]),
            _node("calls_var", "view", "select {{ var('start_date') }}", []),
            _node("env", "view", "select {{ env_var('X') }}", []),
            _node("mart", "incremental", "select 1", []),
        ]),
    }  # fmt: skip
    assert window_independent_views(manifest) == ["env", "plain"]
    # This project: every staging and intermediate view (the day spine, the daily tables and
    # the disputes joined to their charges are tables, which every run rebuilds).
    kept = window_independent_views(json.loads(MANIFEST_PATH.read_text()))
    assert len(kept) == 12
    assert not {"int_tenant_days", "int_balance_transactions_daily"} & set(kept)
    assert {"stg_stripe__charges", "int_payouts_localized"} <= set(kept)


def test_the_dbt_resource_skips_the_version_probe_and_the_adapter() -> None:
    # The dagster-dbt hooks LedgerDbtCliResource overrides: were they renamed by an upgrade,
    # every run would again import dbt twice more.
    assert isinstance(vars(DbtCliResource)["_cli_version"], cached_property)
    assert callable(vars(DbtCliResource)["_initialize_dbt_core_adapter"])
    resource = dbt_cli()
    # Not `python --version`: the executable is the interpreter running lib.marts.dbt_runner.
    assert resource._cli_version == DBT_PYTHON_VERSION
    assert resource._initialize_dbt_core_adapter(["build"]) is None


def test_dbt_sources_are_the_lake_assets_mapped_by_date() -> None:
    lake_keys = {dg.AssetKey(["lake", t.name]) for t in MIRRORED_TABLES}
    deps = {dep.asset_key: dep for dep in ledger_marts.specs_by_key.values() for dep in dep.deps}
    assert lake_keys <= set(deps)
    for key in lake_keys:
        mapping = deps[key].partition_mapping
        assert isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping)
        assert mapping.partition_dimension_name == "date"
    assert dg.AssetKey(["sor", "tenants"]) in deps
    assert dg.AssetKey(["marts", "daily_pnl"]) in ledger_marts.keys
    # dbt data tests are asset checks.
    assert any(c.asset_key == dg.AssetKey(["marts", "daily_pnl"]) for c in ledger_marts.check_specs)


def test_materializing_one_day_builds_checks_and_publishes(
    seeded_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    # dbt's profile reads the same state dir as the marts resource.
    monkeypatch.setenv("LEDGER_STATE_DIR", str(state))
    resources = marts_run_resources(
        seeded_lake.dsn, LakeResource(root=str(seeded_lake.layout.root)), state
    )
    result = dg.materialize(
        [ledger_marts],
        partition_key="2025-03-10",
        resources=resources,
    )
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["marts", "daily_pnl"]) in materialized
    checks = result.get_asset_check_evaluations()
    assert checks
    assert all(c.passed for c in checks)
    snapshot = current_snapshot(state / "marts")
    assert snapshot is not None
    assert (snapshot / "daily_pnl.parquet").exists()
    # A fresh database: every view was created, and recorded as built from this project.
    staging = dg.AssetKey(["staging", "stg_stripe__charges"])
    assert staging in materialized
    assert views_built_from(state / "marts.duckdb") == project_fingerprint(DBT_PROJECT_DIR)

    # The next day's run keeps those views, and builds the day's marts and their checks.
    again = dg.materialize(
        [ledger_marts],
        partition_key="2025-03-11",
        resources=resources,
    )
    assert again.success
    rebuilt = {e.asset_key for e in again.get_asset_materialization_events()}
    assert dg.AssetKey(["marts", "daily_pnl"]) in rebuilt
    assert dg.AssetKey(["intermediate", "int_tenant_days"]) in rebuilt, "the spine reads vars"
    assert staging not in rebuilt
    assert all(c.passed for c in again.get_asset_check_evaluations())
    con = duckdb.connect(str(state / "marts.duckdb"), read_only=True)
    try:
        days = con.execute("select distinct local_date from marts.marts.daily_pnl order by 1")
        assert days.fetchall() == [(date(2025, 3, 10),), (date(2025, 3, 11),)]
    finally:
        con.close()


def test_a_full_build_publishes_the_marts_then_audits_the_lake(
    seeded_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("LEDGER_STATE_DIR", str(state))
    result = dg.materialize(
        [ledger_marts],
        partition_key="2025-03-10",
        resources=marts_run_resources(
            seeded_lake.dsn, LakeResource(root=str(seeded_lake.layout.root)), state
        ),
        run_config=dg.RunConfig({ledger_marts.op.name: {"config": {"full_refresh": True}}}),
    )
    assert result.success
    assert current_snapshot(state / "marts") is not None
    events = result.all_events
    checked = [
        i for i, e in enumerate(events)
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.asset_key
        == dg.AssetKey(["staging", "stg_stripe__charges"])
    ]  # fmt: skip
    built = [i for i, e in enumerate(events) if e.is_step_materialization]
    # The charges' grain test ran, passed, and only after every model was built.
    assert checked
    assert min(checked) > max(built)
    audit = [
        c for c in result.get_asset_check_evaluations()
        if c.asset_key.path[0] == "staging"
    ]  # fmt: skip
    assert all(c.passed for c in audit)


def test_an_open_reconciliation_mismatch_blocks_that_days_marts(
    seeded_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("LEDGER_STATE_DIR", str(state))
    monkeypatch.delenv("LEDGER_RECONCILIATION_GATING", raising=False)
    mismatch = {
        "check_run_id": "run-1", "checked_at": datetime(2025, 3, 12, tzinfo=UTC),
        "watermark_lsn": "0/1", "tenant_id": 3, "local_date": date(2025, 3, 10),
        "currency": "usd", "table_name": "stripe_charges", "status": "mismatch",
        "pg_rows": 2, "lake_rows": 1, "pg_amount": 500, "lake_amount": 400, "pg_fee": 0,
        "lake_fee": 0, "pg_net": 0, "lake_net": 0, "differing_keys": "ch_1",
    }  # fmt: skip
    write_results(results_dir(state), pa.Table.from_pylist([mismatch]))
    resources = marts_run_resources(
        seeded_lake.dsn, LakeResource(root=str(seeded_lake.layout.root)), state
    )
    blocked = dg.materialize(
        [ledger_marts], partition_key="2025-03-10", resources=resources, raise_on_error=False
    )
    assert not blocked.success
    failure = next(e for e in blocked.all_events if e.is_step_failure)
    message = str(failure.event_specific_data)
    assert "stripe_charges tenant 3 2025-03-10" in message
    assert current_snapshot(state / "marts") is None, "nothing was published"
    # Another day is not gated by it.
    elsewhere = dg.materialize(
        [ledger_marts], partition_key="2025-03-11", resources=resources, raise_on_error=False
    )
    assert elsewhere.success
