-- The lake files every Stripe row under the local day of `created` in its tenant's zone; a
-- zone change (tzdata update) or a bug there would move money between days. Checked on the
-- run's window only. For a fixed zone the local date never decreases as the instant grows, so
-- when the earliest and the latest `created` filed under a (zone, local_date) both fall on that
-- day, every row between them does: two zone conversions per zone-day (~15 us each) instead of
-- one per row, and the daily table has each tenant-day's earliest and latest already. A failing
-- row names the zone and the day.
with balance_transactions as (
    select * from {{ ref('int_balance_transactions_daily') }}
    where {{ in_window('local_date') }}
),

tenants as (
    select * from {{ ref('stg_ledger__tenants') }}
),

tenant_days as (
    select
        tenant_id,
        local_date,
        min(first_created_at) as first_created_at,
        max(last_created_at) as last_created_at
    from balance_transactions
    group by tenant_id, local_date
),

zone_days as (
    select
        tenants.time_zone,
        tenant_days.local_date,
        min(tenant_days.first_created_at) as first_created_at,
        max(tenant_days.last_created_at) as last_created_at
    from tenant_days
    inner join tenants
        on tenant_days.tenant_id = tenants.tenant_id
    group by tenants.time_zone, tenant_days.local_date
),

checked as (
    select
        time_zone,
        local_date,
        cast(timezone(time_zone, first_created_at) as date) as first_expected,
        cast(timezone(time_zone, last_created_at) as date) as last_expected
    from zone_days
)

select *
from checked
where local_date <> first_expected or local_date <> last_expected
