from pathlib import Path

import psycopg
import pytest

from ledger_assets.lib.sor.catalog import MIRRORED_TABLES
from ledger_assets.lib.sor.migrate import MigrationError, applied_versions, discover, migrate


def test_fresh_database_gets_every_migration_then_none(empty_dsn: str) -> None:
    first = migrate(empty_dsn)
    assert [m.version for m in first] == [m.version for m in discover()]
    assert migrate(empty_dsn) == []  # a second run is a no-op
    with psycopg.connect(empty_dsn) as conn:
        assert set(applied_versions(conn)) == {m.version for m in discover()}


def test_failing_migration_leaves_nothing_behind_and_is_retried(
    empty_dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_good.sql").write_text("create table good_one (id int primary key);")
    (tmp_path / "0002_bad.sql").write_text(
        "create table half_done (id int); select no_such_function();"
    )
    with pytest.raises(MigrationError, match="0002_bad failed and was rolled back"):
        migrate(empty_dsn, tmp_path)
    with psycopg.connect(empty_dsn) as conn:
        assert set(applied_versions(conn)) == {1}
        assert conn.execute("select to_regclass('half_done')").fetchone() == (None,)
    (tmp_path / "0002_bad.sql").write_text("create table half_done (id int);")
    assert [m.version for m in migrate(empty_dsn, tmp_path)] == [2]


def test_edited_migration_is_refused(empty_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("create table a (id int);")
    migrate(empty_dsn, tmp_path)
    (tmp_path / "0001_a.sql").write_text("create table a (id bigint);")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        migrate(empty_dsn, tmp_path)


def test_badly_named_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_oops.sql").write_text("select 1;")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        discover(tmp_path)


def test_mirrored_tables_have_primary_key_and_full_replica_identity(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn) as conn:
        rows = dict(
            conn.execute(
                """
                select c.relname, c.relreplident
                from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where n.nspname = 'ledger' and c.relkind = 'r'
                """
            ).fetchall()
        )
        for table in MIRRORED_TABLES:
            assert rows[table.name] == "f", table.name
            pk = conn.execute(
                """
                select a.attname from pg_index i
                join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
                where i.indrelid = ('ledger.' || %s)::regclass and i.indisprimary
                """,
                (table.name,),
            ).fetchall()
            assert pk == [(table.primary_key,)]


def test_every_tenant_table_has_rls_enabled(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn) as conn:
        missing = conn.execute(
            """
            select c.relname
            from pg_class c
            join pg_namespace n on n.oid = c.relnamespace
            join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id'
            where n.nspname = 'ledger' and c.relkind = 'r' and not c.relrowsecurity
            """
        ).fetchall()
    assert missing == []


def test_tenant_time_zone_must_be_an_iana_name(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn) as conn:
        for bad in ["EST", "+05:00", "Mars/Olympus_Mons"]:
            with pytest.raises(psycopg.errors.InvalidParameterValue), conn.transaction():
                conn.execute(
                    "insert into ledger.tenants (tenant_id, name, time_zone, default_currency, "
                    "stripe_account_id) values (1, 'x', %s, 'usd', 'acct_1')",
                    (bad,),
                )
        conn.execute(
            "insert into ledger.tenants (tenant_id, name, time_zone, default_currency, "
            "stripe_account_id) values (1, 'x', 'Pacific/Kiritimati', 'usd', 'acct_1')"
        )


def test_unknown_currency_is_rejected(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute(
            "insert into ledger.tenants (tenant_id, name, time_zone, default_currency, "
            "stripe_account_id) values (1, 'x', 'UTC', 'xxx', 'acct_1')"
        )
