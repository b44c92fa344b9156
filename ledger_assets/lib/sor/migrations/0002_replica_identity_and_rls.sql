-- Replica identity for the mirrored tables (reason in 0001's header) and row-level security.
--
-- Tenant isolation: an application session states its tenant with
--     select set_config('app.tenant_id', $1, true)      -- parameterized, transaction-local
-- and the policies below show it that tenant's rows only. A session that states no tenant sees
-- nothing. The role ledger_app is what applications (the dashboard, tenant-facing APIs) use; it
-- is not the table owner and has NOBYPASSRLS, so it cannot bypass the policies. The owner (the
-- migration/ingestion role) keeps owner access for cross-tenant system work: ingestion, CDC
-- snapshots and reconciliation.

alter table ledger.tenants                     replica identity full;
alter table ledger.stripe_charges              replica identity full;
alter table ledger.stripe_refunds              replica identity full;
alter table ledger.stripe_disputes             replica identity full;
alter table ledger.stripe_payouts              replica identity full;
alter table ledger.stripe_balance_transactions replica identity full;
alter table ledger.plaid_items                 replica identity full;
alter table ledger.plaid_accounts              replica identity full;
alter table ledger.plaid_transactions          replica identity full;

create function ledger.current_tenant_id() returns integer
language sql stable parallel safe as $$
    select nullif(current_setting('app.tenant_id', true), '')::integer
$$;
comment on function ledger.current_tenant_id() is
    'The tenant this session is scoped to (app.tenant_id), or NULL, which matches no row.';

do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'ledger_app') then
        create role ledger_app nologin nosuperuser nobypassrls noinherit;
    end if;
end $$;

grant usage on schema ledger to ledger_app;
grant select on ledger.currencies to ledger_app;
grant execute on function ledger.current_tenant_id() to ledger_app;

do $$
declare
    t text;
begin
    foreach t in array array[
        'tenants', 'stripe_charges', 'stripe_refunds', 'stripe_disputes', 'stripe_payouts',
        'stripe_balance_transactions', 'plaid_items', 'plaid_accounts', 'plaid_transactions',
        'webhook_inbox', 'ingestion_cursors', 'quarantine']
    loop
        execute format('alter table ledger.%I enable row level security', t);
        execute format(
            'create policy tenant_isolation on ledger.%I as permissive for all to ledger_app '
            'using (tenant_id = ledger.current_tenant_id()) '
            'with check (tenant_id = ledger.current_tenant_id())', t);
        execute format('grant select, insert, update, delete on ledger.%I to ledger_app', t);
    end loop;
end $$;
