"""Fixtures for the CDC capture tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from ledger_assets.lib.cdc import CaptureConfig
from ledger_assets.lib.cdc import slot as slots


@pytest.fixture
def config(migrated_dsn: str, tmp_path: Path) -> Iterator[CaptureConfig]:
    """A capture config whose slot and publication are named after the test's database."""
    name = str(conninfo_to_dict(migrated_dsn)["dbname"])
    cfg = CaptureConfig(
        dsn=migrated_dsn,
        changelog_dir=tmp_path / "lake" / "_changelog",
        slot_name=f"cdc_{name}",
        publication=f"cdc_{name}",
        idle_advance_bytes=1 << 40,
    )
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(
            "insert into ledger.tenants (tenant_id, name, time_zone, default_currency,"
            " stripe_account_id) values (1, 'one', 'America/New_York', 'usd', 'acct_1'),"
            " (2, 'two', 'Europe/London', 'gbp', 'acct_2')"
        )
    try:
        yield cfg
    finally:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            slots.drop_slot(conn, cfg.slot_name)
