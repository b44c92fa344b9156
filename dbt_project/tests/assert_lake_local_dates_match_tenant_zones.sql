-- The lake files every Stripe row under the local day of `created` in its tenant's zone; a
-- zone change (tzdata update) or a bug there would move money between days. Checked on the
-- run's window only. The local date of an instant never decreases as the instant grows, so
-- when the earliest and the latest `created` of a (tenant, local_date) both fall on that day,
-- every row between them does: two zone conversions per tenant-day instead of one per row.
with balance_transactions as (
    select * from {{ ref('stg_stripe__balance_transactions') }}
    where {{ in_window('local_date') }}
),

tenants as (
    select * from {{ ref('stg_ledger__tenants') }}
),

days as (
    select
        tenant_id,
        local_date,
        min(created_at) as first_created_at,
        max(created_at) as last_created_at
    from balance_transactions
    group by tenant_id, local_date
)

select
    days.tenant_id,
    days.local_date,
    cast(timezone(tenants.time_zone, days.first_created_at) as date) as first_expected,
    cast(timezone(tenants.time_zone, days.last_created_at) as date) as last_expected
from days
inner join tenants
    on days.tenant_id = tenants.tenant_id
where
    days.local_date <> cast(timezone(tenants.time_zone, days.first_created_at) as date)
    or days.local_date <> cast(timezone(tenants.time_zone, days.last_created_at) as date)
