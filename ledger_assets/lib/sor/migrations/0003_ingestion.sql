-- Ingestion bookkeeping on the facts themselves.
--
-- source_ts: the provider time of the snapshot a row holds — the Stripe event's `created` when
-- it came from an event, or the time the list request started when it came from a pull.
-- Upserts only move a row forward (newer source_ts, or the same source_ts and more lifecycle
-- progress), so a late or duplicated delivery of an older snapshot never undoes a newer one:
-- arrival order never decides state. `now()` is stable, so adding the column is instant
-- (no table rewrite) and existing rows count as "as of the migration".

alter table ledger.stripe_charges              add column source_ts timestamptz not null default now();
alter table ledger.stripe_refunds              add column source_ts timestamptz not null default now();
alter table ledger.stripe_disputes             add column source_ts timestamptz not null default now();
alter table ledger.stripe_payouts              add column source_ts timestamptz not null default now();
alter table ledger.stripe_balance_transactions add column source_ts timestamptz not null default now();

-- Lifecycle progress of a status, to order two snapshots stamped in the same second (Stripe's
-- `created` has 1-second resolution). Terminal states rank highest.
create function ledger.status_progress(status text) returns smallint
language sql immutable parallel safe as $$
    select case status
        when 'warning_needs_response' then 1 when 'warning_under_review' then 2
        when 'needs_response' then 3 when 'under_review' then 4
        when 'appeal_needs_response' then 5 when 'appeal_under_review' then 6
        when 'pending' then 1 when 'requires_action' then 2 when 'in_transit' then 3
        when 'available' then 5
        when 'succeeded' then 8 when 'paid' then 8
        when 'warning_closed' then 9 when 'prevented' then 9
        when 'won' then 9 when 'lost' then 9
        when 'failed' then 10 when 'canceled' then 10
        else 0
    end::smallint
$$;

-- The secret that lets the Plaid client read an item. Stored with the item because each item
-- has its own; production deployments restrict this column to the ingestion role.
alter table ledger.plaid_items add column access_token text;
revoke select on ledger.plaid_items from ledger_app;
grant select (item_id, tenant_id, institution_id, institution_name, created_at)
    on ledger.plaid_items to ledger_app;

-- A quarantined record that only lacks a parent (a dispute before its charge) names the key it
-- waits for, so the arrival of that key re-tries exactly the records waiting on it.
alter table ledger.quarantine add column awaiting_key text;
create index quarantine_awaiting on ledger.quarantine (awaiting_key)
    where resolved_at is null and awaiting_key is not null;
