{{ config(materialized='table') }}
{#- The balance transactions in one pass, reduced to what every mart and test needs of them: one
    row per tenant, settlement currency, account-local day, reporting category and payout
    (null: not swept into one yet), with its P&L line and its currency's exponent. The one place
    that decides which reporting categories are revenue (docs: monthly_revenue_definition).
    daily_pnl, disputes_by_activity_date, stripe_payouts, source_positions, the day spine's
    bounds and the local-date test read this table instead of each scanning every balance
    transaction of the lake again (a full build's cost is per lake row: ARCHITECTURE.md,
    "Full-build cost"). The rows are grouped first and classified after, so the P&L line and
    the currency are looked up once per group, not once per transaction. A table that every run
    rebuilds from the lake views, which a windowed run scopes to the days it reads. -#}
with balance_transactions as (
    select * from {{ ref('stg_stripe__balance_transactions') }}
),

currencies as (
    select * from {{ ref('stg_ledger__currencies') }}
),

grouped as (
    select
        tenant_id,
        currency,
        local_date,
        reporting_category,
        payout_id,
        cast(sum(amount) as bigint) as amount,
        cast(sum(fee) as bigint) as fee,
        cast(sum(net) as bigint) as net,
        count(*) as balance_transactions,
        -- The identity every balance transaction keeps, counted here instead of in a scan of
        -- its own (the model's data tests require 0): sums could hide two errors that cancel.
        count(*) filter (where not coalesce(net = amount - fee, false))
            as net_not_amount_minus_fee,
        max(source_lsn) as max_lsn,
        min(created_at) as first_created_at,
        max(created_at) as last_created_at
    from balance_transactions
    group by tenant_id, currency, local_date, reporting_category, payout_id
),

classified as (
    select
        grouped.tenant_id,
        grouped.currency,
        grouped.local_date,
        grouped.reporting_category,
        grouped.payout_id,
        -- A currency the project does not know stops the build here, naming the tenant and
        -- day of its transactions (the lake partition; naming one transaction would cost a
        -- string aggregate per row): a wrong exponent would scale every amount of that
        -- currency by a power of ten. (error(null) does not raise: the message must never be
        -- null.)
        cast(coalesce(
            currencies.currency_exponent,
            error(
                'unknown currency ''' || coalesce(grouped.currency, 'null')
                || ''' on balance transactions of tenant ' || grouped.tenant_id || ' on '
                || grouped.local_date || ': not in ledger.currencies'
            )
        ) as smallint) as currency_exponent,
        case
            when grouped.reporting_category in ('charge', 'partial_capture_reversal')
                then 'gross_charges'
            when grouped.reporting_category in ('refund', 'refund_failure')
                then 'refunds'
            when grouped.reporting_category = 'dispute' then 'disputes'
            when grouped.reporting_category = 'dispute_reversal'
                then 'dispute_reversals'
            when grouped.reporting_category = 'fee' then 'fees'
            when grouped.reporting_category in ('payout', 'payout_reversal')
                then 'payouts'
            when grouped.reporting_category in (
                '{{ stripe_reporting_categories() | join("', '") }}'  -- noqa: LT05
            ) then 'other_activity'
            else 'unreconciled'
        end as pnl_line,
        grouped.amount,
        grouped.fee,
        grouped.net,
        grouped.balance_transactions,
        grouped.net_not_amount_minus_fee,
        grouped.max_lsn,
        grouped.first_created_at,
        grouped.last_created_at
    from grouped
    left join currencies
        on grouped.currency = currencies.currency
),

flagged as (
    select
        *,
        pnl_line in ('gross_charges', 'refunds', 'disputes', 'dispute_reversals')
            as counts_as_revenue
    from classified
)

select * from flagged
