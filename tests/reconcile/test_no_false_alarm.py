"""Many cycles under a steady write load, with capture and apply running: no false alarm."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time

import psycopg

from ledger_assets.lib.cdc import CaptureBusyError
from tests.reconcile.conftest import FULL, INCREMENTAL, Env

SECONDS = 40.0
#: Cycles judged at the least, however slow a shared machine makes them. The issue's figure
#: (100 consecutive cycles) runs with RECONCILE_CYCLES=100; CI runs the short version.
CYCLES = int(os.environ.get("RECONCILE_CYCLES", "10"))


def _write(env: Env, stop: threading.Event, errors: list[BaseException]) -> None:
    rng = random.Random(7)
    try:
        with psycopg.connect(env.dsn, autocommit=True) as conn:
            ids = [str(r[0]) for r in conn.execute("select id from ledger.stripe_charges")]
            tenants = [int(str(r[0])) for r in conn.execute("select tenant_id from ledger.tenants")]
            n = 0
            while not stop.is_set():
                n += 1
                with conn.transaction():
                    conn.execute(
                        "update ledger.stripe_charges set amount = amount + 1,"
                        " amount_captured = amount_captured + 1 where id = %s",
                        (rng.choice(ids),),
                    )
                    # Rows that move to another day and another tenant.
                    conn.execute(
                        "update ledger.stripe_charges set created = created - interval '1 day',"
                        " tenant_id = %s where id = %s",
                        (rng.choice(tenants), rng.choice(ids)),
                    )
                    conn.execute(
                        "insert into ledger.stripe_charges (id, tenant_id, amount, amount_captured,"
                        " amount_refunded, currency, status, paid, captured, refunded, disputed,"
                        " created) values (%s, %s, %s, %s, 0, 'usd', 'succeeded', true, true,"
                        " false, false, timestamptz '2025-02-10 12:00+00' + %s * interval '1 h')",
                        (f"ch_live_{n}", rng.choice(tenants), n, n, n % 400),
                    )
                time.sleep(0.01)
    except BaseException as exc:
        errors.append(exc)


def _sync(env: Env, stop: threading.Event, errors: list[BaseException]) -> None:
    try:
        while not stop.is_set():
            with contextlib.suppress(CaptureBusyError):
                env.sync()
            time.sleep(0.2)
    except BaseException as exc:
        errors.append(exc)


def test_no_false_alarm_under_steady_writes(env: Env) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_write, args=(env, stop, errors)),
        threading.Thread(target=_sync, args=(env, stop, errors)),
    ]
    for thread in threads:
        thread.start()
    statuses: list[str] = []
    in_flight = 0
    try:
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline or len(statuses) < CYCLES:
            scope = FULL if len(statuses) % 5 == 4 else INCREMENTAL
            report = env.check(scope, sweep_cycles=4)
            statuses.append(report.status)
            in_flight += report.keys_in_flight
            assert report.status in ("pass", "deferred"), report.to_metadata()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert statuses.count("pass") >= len(statuses) - 2, statuses
    assert in_flight > 0, "the writes never overlapped a cycle"
    env.sync()
    assert env.check().status == "pass"
