-- Per-tenant time ranges on the Stripe tables that had none.
--
-- An incremental reconciliation cycle (lib/reconcile) reads the rows of a few (tenant, local day)
-- partitions per table, as UTC windows per tenant: without a (tenant_id, created) index it
-- scans the whole of these tables every 15 minutes. Charges and balance transactions have had
-- theirs since 0001; Plaid transactions have (tenant_id, date).
--
-- Migrations run in a transaction, so these are plain (not CONCURRENTLY) builds: they block
-- writes to each table while it is indexed (seconds per few million rows; refunds, disputes
-- and payouts are the smaller Stripe tables).

create index stripe_refunds_tenant_created on ledger.stripe_refunds (tenant_id, created);
create index stripe_disputes_tenant_created on ledger.stripe_disputes (tenant_id, created);
create index stripe_payouts_tenant_created on ledger.stripe_payouts (tenant_id, created);
