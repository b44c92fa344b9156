"""Row-level security: the application role sees exactly one tenant's rows."""

import psycopg
import pytest

from ledger_assets.lib.sor.tenancy import tenant_transaction

CHARGE = (
    "insert into ledger.stripe_charges (id, tenant_id, amount, amount_captured, amount_refunded,"
    " currency, status, paid, captured, refunded, disputed, created)"
    " values (%s, %s, 1000, 1000, 0, 'usd', 'succeeded', true, true, false, false, now())"
)


@pytest.fixture
def two_tenants(migrated_dsn: str) -> str:
    with psycopg.connect(migrated_dsn) as conn:
        for tenant in (1, 2):
            conn.execute(
                "insert into ledger.tenants (tenant_id, name, time_zone, default_currency, "
                "stripe_account_id) values (%s, %s, 'Europe/London', 'usd', %s)",
                (tenant, f"tenant {tenant}", f"acct_{tenant}"),
            )
            conn.execute(CHARGE, (f"ch_{tenant}a", tenant))
            conn.execute(CHARGE, (f"ch_{tenant}b", tenant))
    return migrated_dsn


def test_app_role_sees_only_its_tenant(two_tenants: str) -> None:
    with psycopg.connect(two_tenants) as conn:
        with tenant_transaction(conn, 1):
            ids = [r[0] for r in conn.execute("select id from ledger.stripe_charges order by id")]
            tenants = conn.execute("select tenant_id from ledger.tenants").fetchall()
        assert ids == ["ch_1a", "ch_1b"]
        assert tenants == [(1,)]
        with tenant_transaction(conn, 2):
            count = conn.execute("select count(*) from ledger.stripe_charges").fetchone()
        assert count == (2,)


def test_app_role_without_tenant_sees_nothing(two_tenants: str) -> None:
    with psycopg.connect(two_tenants) as conn, conn.transaction():
        conn.execute("set local role ledger_app")
        assert conn.execute("select count(*) from ledger.stripe_charges").fetchone() == (0,)


def test_app_role_cannot_write_into_another_tenant(two_tenants: str) -> None:
    with (
        psycopg.connect(two_tenants) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
        tenant_transaction(conn, 1),
    ):
        conn.execute(CHARGE, ("ch_forged", 2))


def test_app_role_cannot_move_or_touch_other_tenants_rows(two_tenants: str) -> None:
    with psycopg.connect(two_tenants) as conn:
        with tenant_transaction(conn, 1):
            touched = conn.execute(
                "update ledger.stripe_charges set amount = 0 where tenant_id = 2"
            ).rowcount
            deleted = conn.execute("delete from ledger.stripe_charges where id = 'ch_2a'").rowcount
        assert (touched, deleted) == (0, 0)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(conn, 1):
            conn.execute("update ledger.stripe_charges set tenant_id = 2 where id = 'ch_1a'")


def test_app_role_cannot_disable_rls(two_tenants: str) -> None:
    with psycopg.connect(two_tenants) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(conn, 1):
            conn.execute("alter table ledger.stripe_charges disable row level security")
        with tenant_transaction(conn, 1):
            conn.execute("set local row_security = off")
            # row_security=off makes a query that policies would filter an error, never a bypass.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select count(*) from ledger.stripe_charges where tenant_id = 2")


def test_tenant_scope_ends_with_the_transaction(two_tenants: str) -> None:
    with psycopg.connect(two_tenants, autocommit=True) as conn:
        with tenant_transaction(conn, 1):
            pass
        assert conn.execute("select current_user").fetchone() == ("ledger",)
        assert conn.execute(
            "select coalesce(current_setting('app.tenant_id', true), '')"
        ).fetchone() == ("",)


@pytest.mark.parametrize("bad", [0, -1, "1", 1.0, True, None])
def test_tenant_id_must_be_a_positive_int(two_tenants: str, bad: object) -> None:
    with (
        psycopg.connect(two_tenants) as conn,
        pytest.raises(ValueError, match="positive integer"),
        tenant_transaction(conn, bad),  # type: ignore[arg-type]
    ):
        pass
