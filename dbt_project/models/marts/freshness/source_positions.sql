{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['tenant_id', 'local_date'],
        on_schema_change='fail',
    )
}}
{#- Grain: one row per tenant and account-local day the run rebuilds (the window's days, every
    day of the window with lake rows, and the charge days of disputes created in it, whose
    cohorts disputes_by_charge_cohort rebuilds). max_lsn: the latest WAL position (`_lsn`)
    among the lake rows behind that day's numbers: every lake table's rows of the day, plus the
    disputes of the day's charges (the cohort mart counts them under the charge's day, whatever
    day they were created). 0 when only seeding-snapshot rows are behind it (and for a day
    without rows): lib.marts.export turns it into the snapshot's source tags. -#}
with tenant_days as (
    select distinct
        tenant_id,
        local_date
    from {{ ref('int_tenant_days') }}
),

cohort_days as (
    select distinct
        tenant_id,
        charge_local_date as local_date
    from {{ ref('int_disputes_joined_to_charges') }}
    where {{ in_window('local_date') }}
),

-- Each table's rows reduced to one per tenant-day before they meet: the union and the join
-- then handle tenant-days, not lake rows. Charges and balance transactions come reduced
-- already (their daily tables), so this model does not scan them again.
rows_behind as (
    select
        tenant_id,
        local_date,
        max(max_lsn) as max_lsn,
        sum(charges) as lake_rows
    from {{ ref('int_charges_daily') }}
    group by tenant_id, local_date
    union all
    select
        tenant_id,
        local_date,
        max(source_lsn) as max_lsn,
        count(source_lsn) as lake_rows
    from {{ ref('stg_stripe__refunds') }}
    group by tenant_id, local_date
    union all
    select
        tenant_id,
        local_date,
        max(source_lsn) as max_lsn,
        count(source_lsn) as lake_rows
    from {{ ref('stg_stripe__disputes') }}
    group by tenant_id, local_date
    union all
    select
        tenant_id,
        local_date,
        max(source_lsn) as max_lsn,
        count(source_lsn) as lake_rows
    from {{ ref('stg_stripe__payouts') }}
    group by tenant_id, local_date
    union all
    select
        tenant_id,
        local_date,
        max(max_lsn) as max_lsn,
        sum(balance_transactions) as lake_rows
    from {{ ref('int_balance_transactions_daily') }}
    group by tenant_id, local_date
    union all
    select
        tenant_id,
        local_date,
        max(source_lsn) as max_lsn,
        count(source_lsn) as lake_rows
    from {{ ref('stg_plaid__transactions') }}
    group by tenant_id, local_date
    union all
    select
        tenant_id,
        charge_local_date as local_date,
        max(source_lsn) as max_lsn,
        count(source_lsn) as lake_rows
    from {{ ref('int_disputes_joined_to_charges') }}
    group by tenant_id, charge_local_date
),

-- The window's days with lake rows, also before the tenant's spine starts (history imported
-- from before it was onboarded): a late-arrivals run for such a day must move its tag, or a
-- cache keyed on it would keep the numbers from before the late change.
days_with_rows as (
    select distinct
        tenant_id,
        local_date
    from rows_behind
    where {{ in_window('local_date') }}
),

keys as (
    select * from tenant_days
    union
    select * from cohort_days
    union
    select * from days_with_rows
),

positions as (
    select
        keys.tenant_id,
        keys.local_date,
        cast(coalesce(max(rows_behind.max_lsn), 0) as bigint) as max_lsn,
        cast(coalesce(sum(rows_behind.lake_rows), 0) as bigint) as lake_rows
    from keys
    left join rows_behind
        on
            keys.tenant_id = rows_behind.tenant_id
            and keys.local_date = rows_behind.local_date
    group by keys.tenant_id, keys.local_date
)

select * from positions
