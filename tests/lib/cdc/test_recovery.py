"""Crashes at every step resume without loss or duplicates; a foreign slot fails closed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger_assets.lib.cdc import (
    CaptureConfig,
    ChangeCapture,
    FailClosedError,
    Lsn,
    PositionMismatchError,
    SlotLostError,
    SlotRecreatedError,
    changelog,
)
from ledger_assets.lib.cdc import capture as capture_module
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.cdc.changelog import BatchWriter, file_sha256
from ledger_assets.lib.cdc.state import STATE_FILE
from tests.lib.cdc.helpers import (
    assert_lake_equals_postgres,
    capture_all,
    change_rows,
    execute,
    landed,
    started,
)


class SimulatedCrashError(Exception):
    """Stands in for the process dying at a given step."""


def write_charges(dsn: str, prefix: str, transactions: int = 3, rows: int = 4) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for txn in range(transactions):
            with conn.transaction():
                for n in range(rows):
                    conn.execute(
                        "insert into ledger.stripe_charges (id, tenant_id, amount,"
                        " amount_captured, amount_refunded, currency, status, paid, captured,"
                        " refunded, disputed, created) values (%s, 1, %s, %s, 0, 'usd',"
                        " 'succeeded', true, true, false, false, now())",
                        (f"{prefix}_{txn}_{n}", n, n),
                    )
            conn.execute(
                "update ledger.stripe_charges set amount = amount + 1 where id = %s",
                (f"{prefix}_{txn}_0",),
            )


def _crash_after(calls: int, real: Callable[..., Any]) -> Callable[..., Any]:
    count = 0

    def fake(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        if count > calls:
            raise SimulatedCrashError
        return real(*args, **kwargs)

    return fake


CRASH_POINTS: dict[str, tuple[Any, str, int]] = {
    # name: (module, attribute, calls that succeed before the crash)
    "mid_read": (capture_module, "decode", 5),
    "between_write_and_rename": (changelog, "publish_file", 0),
    "after_data_files_before_manifest": (changelog, "land_manifest", 0),
    "after_landing_before_advance": (slots, "advance_slot", 0),
    "after_advance_before_state": (capture_module, "write_state", 0),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_crash_at_each_step_loses_nothing_and_duplicates_nothing(
    config: CaptureConfig, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started(config)
    write_charges(config.dsn, "a")
    module, attribute, calls = CRASH_POINTS[point]
    real = getattr(module, attribute)
    with monkeypatch.context() as patch:
        patch.setattr(module, attribute, _crash_after(calls, real))
        # A killed process runs no cleanup: temp files stay behind too.
        patch.setattr(BatchWriter, "abort", lambda self: None)
        with pytest.raises(SimulatedCrashError):
            capture_all(config)
    write_charges(config.dsn, "b")

    capture_all(config)

    rows = change_rows(config, "stripe_charges")
    positions = [(r["commit_lsn"], r["seq"]) for r in rows]
    assert len(positions) == len(set(positions)) == 2 * 3 * (4 + 1)
    assert_lake_equals_postgres(config)
    leftovers = [p.name for p in config.changelog_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    manifests = landed(config)
    assert all(m.end == n.start for m, n in itertools.pairwise(manifests))
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        info = slots.read_slot(conn, config.slot_name)
    assert info is not None
    assert info.confirmed_flush_lsn == manifests[-1].end


def test_a_landed_unconfirmed_batch_is_verified_and_kept_byte_for_byte(
    config: CaptureConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    started(config)
    write_charges(config.dsn, "a")
    with monkeypatch.context() as patch:
        patch.setattr(slots, "advance_slot", _crash_after(0, slots.advance_slot))
        with pytest.raises(SimulatedCrashError):
            capture_all(config)
    (manifest,) = landed(config)
    files = sorted(config.changelog_dir.glob("*.parquet"))
    before = {p.name: (file_sha256(p), p.stat().st_mtime_ns) for p in files}

    with ChangeCapture(config) as capture:
        capture.start()
    after = {p.name: (file_sha256(p), p.stat().st_mtime_ns) for p in files}
    assert after == before
    assert [m.name for m in landed(config)] == [manifest.name]


def test_rerun_after_an_unlanded_batch_produces_identical_file_names_and_bytes(
    config: CaptureConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    started(config)
    write_charges(config.dsn, "a")
    with monkeypatch.context() as patch:
        patch.setattr(changelog, "land_manifest", _crash_after(0, changelog.land_manifest))
        with pytest.raises(SimulatedCrashError):
            capture_all(config)
    first = {p.name: file_sha256(p) for p in config.changelog_dir.glob("*.parquet")}
    assert first
    assert landed(config) == []

    capture_all(config)

    second = {p.name: file_sha256(p) for p in config.changelog_dir.glob("*.parquet")}
    assert second == first


def test_a_landed_batch_that_the_slot_does_not_reproduce_fails_closed(
    config: CaptureConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    started(config)
    write_charges(config.dsn, "a")
    with monkeypatch.context() as patch:
        patch.setattr(slots, "advance_slot", _crash_after(0, slots.advance_slot))
        with pytest.raises(SimulatedCrashError):
            capture_all(config)
    (manifest,) = landed(config)
    path = config.changelog_dir / f"{manifest.name}.json"
    raw = json.loads(path.read_text())
    raw["source_digest"] = "0" * 64
    path.write_text(json.dumps(raw))
    with pytest.raises(PositionMismatchError, match="differs from the landed one"):
        capture_all(config)


def _edit_state(folder: Path, **changes: str) -> None:
    path = folder / STATE_FILE
    state = json.loads(path.read_text())
    state.update(changes)
    path.write_text(json.dumps(state))


def test_missing_slot_fails_closed_with_the_resnapshot_path(config: CaptureConfig) -> None:
    started(config)
    execute(config.dsn, "select pg_drop_replication_slot(%s)", params=(config.slot_name,))
    with pytest.raises(SlotLostError, match="does not exist") as error:
        capture_all(config)
    message = str(error.value)
    assert "\n" not in message
    assert "reset_capture" in message
    assert "Re-snapshot" in message


def test_recreated_slot_fails_closed(config: CaptureConfig) -> None:
    started(config)
    write_charges(config.dsn, "a", transactions=1)
    capture_all(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        slots.drop_slot(conn, config.slot_name)
    write_charges(config.dsn, "lost", transactions=1)  # never reaches the new slot
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        slots.create_slot(conn, config.slot_name)
    with pytest.raises(SlotRecreatedError, match="ahead of the change log"):
        capture_all(config)


def test_slot_consumed_outside_the_capture_fails_closed(config: CaptureConfig) -> None:
    started(config)
    write_charges(config.dsn, "a", transactions=1)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        flush = slots.current_flush_lsn(conn)
        slots.advance_slot(conn, config.slot_name, flush)
    with pytest.raises(SlotRecreatedError, match="consumed outside this capture"):
        capture_all(config)


def test_stored_position_ahead_of_the_slot_fails_closed(config: CaptureConfig) -> None:
    started(config)
    write_charges(config.dsn, "a", transactions=1)
    capture_all(config)
    (manifest,) = landed(config)
    _edit_state(config.changelog_dir, landed_lsn=str(Lsn(manifest.end + 4096)))
    with pytest.raises(PositionMismatchError, match="behind the change log"):
        capture_all(config)


def test_stored_position_behind_the_slot_fails_closed(config: CaptureConfig) -> None:
    started(config)
    write_charges(config.dsn, "a", transactions=1)
    capture_all(config)
    (manifest,) = landed(config)
    # The state and the change log both claim less than the slot has confirmed.
    for path in config.changelog_dir.glob(f"{manifest.name}*"):
        path.unlink()
    _edit_state(config.changelog_dir, landed_lsn=manifest.start_lsn)
    with pytest.raises(SlotRecreatedError, match="ahead of the change log"):
        capture_all(config)


def test_slot_of_another_cluster_fails_closed(config: CaptureConfig) -> None:
    started(config)
    _edit_state(config.changelog_dir, system_identifier="1")
    with pytest.raises(SlotRecreatedError, match="another cluster"):
        capture_all(config)


def test_slot_whose_restart_lsn_went_back_fails_closed(config: CaptureConfig) -> None:
    started(config)
    write_charges(config.dsn, "a", transactions=1)
    capture_all(config)
    _edit_state(config.changelog_dir, restart_lsn_seen=str(Lsn(1 << 40)))
    with pytest.raises(SlotRecreatedError, match="restart_lsn"):
        capture_all(config)


def test_existing_slot_without_state_is_not_adopted(config: CaptureConfig) -> None:
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        slots.create_slot(conn, config.slot_name)
    with pytest.raises(SlotRecreatedError, match="has no state"):
        started(config)


def test_every_fail_closed_error_names_the_resnapshot_path() -> None:
    for error_type in FailClosedError.__subclasses__():
        assert "reset_capture" in str(error_type("something is wrong"))
