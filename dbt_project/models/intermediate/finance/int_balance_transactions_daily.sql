{{ config(materialized='table') }}
{#- The balance transactions reduced in one pass to what every mart and test needs of them:
    one row per tenant, settlement currency, account-local day, P&L line and payout (null: not
    swept into one yet). daily_pnl, disputes_by_activity_date, stripe_payouts,
    source_positions, the day spine's bounds and the local-date test read this table instead of
    each scanning every balance transaction of the lake again (a full build's cost is per lake
    row: ARCHITECTURE.md, "Full-build cost"). A table that every run rebuilds from the lake
    views, which a windowed run scopes to the days it reads. -#}
with balance_transactions as (
    select * from {{ ref('int_balance_transactions_classified') }}
),

daily as (
    select
        tenant_id,
        currency,
        local_date,
        pnl_line,
        payout_id,
        max(currency_exponent) as currency_exponent,
        bool_or(counts_as_revenue) as counts_as_revenue,
        cast(sum(amount) as bigint) as amount,
        cast(sum(fee) as bigint) as fee,
        cast(sum(net) as bigint) as net,
        count(*) as balance_transactions,
        -- The identity every balance transaction keeps; checked here instead of in a scan of
        -- its own (the model's data tests require 0).
        count(*) filter (where not coalesce(net = amount - fee, false))
            as net_not_amount_minus_fee,
        max(source_lsn) as max_lsn,
        min(created_at) as first_created_at,
        max(created_at) as last_created_at
    from balance_transactions
    group by tenant_id, currency, local_date, pnl_line, payout_id
)

select * from daily
