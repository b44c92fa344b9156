{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['tenant_id', 'local_date'],
        on_schema_change='fail',
    )
}}
{#- Grain: one row per tenant, settlement currency and account-local day. Rebuilds only the
    run's window (vars start_date/end_date); every tenant-day of the window is present, with
    zeros when the lake holds no balance transaction for it.
    unique_key is the tenant-day, coarser than the grain: a rebuild replaces whole tenant-days
    (docs: missing_days_policy), so a currency without rows any more leaves no stale row. -#}
with balance_transactions as (
    select * from {{ ref('int_balance_transactions_daily') }}
    where {{ in_window('local_date') }}
),

tenant_days as (
    select * from {{ ref('int_tenant_days') }}
),

activity as (
    select
        tenant_id,
        currency,
        local_date,
        max(currency_exponent) as currency_exponent,
        sum(amount) filter (where pnl_line = 'gross_charges') as gross_charges,
        sum(amount) filter (where pnl_line = 'refunds') as refunds,
        sum(amount) filter (where pnl_line = 'disputes') as disputes,
        sum(amount) filter (where pnl_line = 'dispute_reversals') as dispute_reversals,
        sum(amount) filter (where pnl_line = 'other_activity') as other_activity,
        sum(amount) filter (where pnl_line = 'unreconciled') as unreconciled_activity,
        -- Fees are negative: Stripe's fee on every activity transaction, plus transactions
        -- that are fees themselves (reporting category `fee`).
        coalesce(sum(amount) filter (where pnl_line = 'fees'), 0)
        - coalesce(sum(fee) filter (where pnl_line <> 'payouts'), 0) as fees,
        sum(amount) filter (where counts_as_revenue) as revenue,
        sum(net) filter (where pnl_line <> 'payouts') as net,
        sum(net) filter (where pnl_line = 'payouts') as payouts,
        sum(balance_transactions) filter (where pnl_line = 'gross_charges') as charge_count,
        sum(balance_transactions) filter (where pnl_line = 'refunds') as refund_count,
        sum(balance_transactions) filter (where pnl_line = 'disputes') as dispute_count,
        sum(balance_transactions) as balance_transaction_count
    from balance_transactions
    group by tenant_id, currency, local_date
),

filled as (
    select
        coalesce(tenant_days.tenant_id, activity.tenant_id) as tenant_id,
        coalesce(tenant_days.currency, activity.currency) as currency,
        coalesce(tenant_days.local_date, activity.local_date) as local_date,
        coalesce(tenant_days.currency_exponent, activity.currency_exponent)
            as currency_exponent,
        cast(coalesce(activity.gross_charges, 0) as bigint) as gross_charges,
        cast(coalesce(activity.refunds, 0) as bigint) as refunds,
        cast(coalesce(activity.disputes, 0) as bigint) as disputes,
        cast(coalesce(activity.dispute_reversals, 0) as bigint) as dispute_reversals,
        cast(coalesce(activity.other_activity, 0) as bigint) as other_activity,
        cast(coalesce(activity.unreconciled_activity, 0) as bigint) as unreconciled_activity,
        cast(coalesce(activity.fees, 0) as bigint) as fees,
        cast(coalesce(activity.revenue, 0) as bigint) as revenue,
        cast(coalesce(activity.net, 0) as bigint) as net,
        cast(coalesce(activity.payouts, 0) as bigint) as payouts,
        cast(coalesce(activity.charge_count, 0) as bigint) as charge_count,
        cast(coalesce(activity.refund_count, 0) as bigint) as refund_count,
        cast(coalesce(activity.dispute_count, 0) as bigint) as dispute_count,
        cast(coalesce(activity.balance_transaction_count, 0) as bigint)
            as balance_transaction_count
    from tenant_days
    full outer join activity
        on
            tenant_days.tenant_id = activity.tenant_id
            and tenant_days.currency = activity.currency
            and tenant_days.local_date = activity.local_date
)

select * from filled
