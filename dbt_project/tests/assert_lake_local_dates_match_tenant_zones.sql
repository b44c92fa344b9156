-- The lake files every Stripe row under the local day of `created` in its tenant's zone; a
-- zone change (tzdata update) or a bug there would move money between days. Checked on the
-- run's window only.
with balance_transactions as (
    select * from {{ ref('stg_stripe__balance_transactions') }}
    where {{ in_window('local_date') }}
),

tenants as (
    select * from {{ ref('stg_ledger__tenants') }}
)

select
    balance_transactions.balance_transaction_id,
    balance_transactions.local_date,
    cast(timezone(tenants.time_zone, balance_transactions.created_at) as date) as expected
from balance_transactions
inner join tenants
    on balance_transactions.tenant_id = tenants.tenant_id
where
    balance_transactions.local_date
    <> cast(timezone(tenants.time_zone, balance_transactions.created_at) as date)
