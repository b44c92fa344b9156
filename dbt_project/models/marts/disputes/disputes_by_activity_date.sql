{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['tenant_id', 'local_date'],
        on_schema_change='fail',
    )
}}
{#- Grain: one row per tenant, currency and account-local day on which dispute activity
    happened (every tenant-day of the window, zeros included). Disputes opened count on the
    dispute's own day; withdrawals and reinstatements on their balance transactions' days.
    dispute_rate = chargebacks opened that day / charges that succeeded that day (inquiries
    are counted apart and left out of the rate, as the card networks do).
    unique_key is the tenant-day, coarser than the grain: a rebuild replaces whole tenant-days
    (docs: missing_days_policy), so a currency without rows any more leaves no stale row. -#}
with disputes as (
    select * from {{ ref('int_disputes_joined_to_charges') }}
    where {{ in_window('local_date') }}
),

balance_transactions as (
    select * from {{ ref('int_balance_transactions_daily') }}
    where {{ in_window('local_date') }}
),

charges as (
    select * from {{ ref('int_charges_daily') }}
    where {{ in_window('local_date') }}
),

tenant_days as (
    select * from {{ ref('int_tenant_days') }}
),

opened as (
    select
        tenant_id,
        currency,
        local_date,
        count(*) filter (where not is_inquiry) as disputes_opened,
        count(*) filter (where is_inquiry) as inquiries_opened,
        sum(amount) filter (where not is_inquiry) as disputed_amount
    from disputes
    group by tenant_id, currency, local_date
),

money as (
    select
        tenant_id,
        currency,
        local_date,
        sum(amount) filter (where pnl_line = 'disputes') as withdrawn,
        sum(amount) filter (where pnl_line = 'dispute_reversals') as reinstated,
        -sum(fee) filter (where pnl_line in ('disputes', 'dispute_reversals')) as dispute_fees
    from balance_transactions
    where pnl_line in ('disputes', 'dispute_reversals')
    group by tenant_id, currency, local_date
),

charged as (
    select
        tenant_id,
        currency,
        local_date,
        charges_succeeded
    from charges
    where charges_succeeded > 0
),

keys as (
    select
        tenant_id,
        currency,
        local_date
    from tenant_days
    union
    select
        tenant_id,
        currency,
        local_date
    from opened
    union
    select
        tenant_id,
        currency,
        local_date
    from money
    union
    select
        tenant_id,
        currency,
        local_date
    from charged
),

joined as (
    select
        keys.tenant_id,
        keys.currency,
        keys.local_date,
        coalesce(opened.disputes_opened, 0) as disputes_opened,
        coalesce(opened.inquiries_opened, 0) as inquiries_opened,
        cast(coalesce(opened.disputed_amount, 0) as bigint) as disputed_amount,
        cast(coalesce(money.withdrawn, 0) as bigint) as withdrawn,
        cast(coalesce(money.reinstated, 0) as bigint) as reinstated,
        cast(coalesce(money.dispute_fees, 0) as bigint) as dispute_fees,
        coalesce(charged.charges_succeeded, 0) as charges_succeeded,
        cast(coalesce(opened.disputes_opened, 0) as double)
        / nullif(charged.charges_succeeded, 0) as dispute_rate
    from keys
    left join opened
        on
            keys.tenant_id = opened.tenant_id
            and keys.currency = opened.currency
            and keys.local_date = opened.local_date
    left join money
        on
            keys.tenant_id = money.tenant_id
            and keys.currency = money.currency
            and keys.local_date = money.local_date
    left join charged
        on
            keys.tenant_id = charged.tenant_id
            and keys.currency = charged.currency
            and keys.local_date = charged.local_date
)

select * from joined
