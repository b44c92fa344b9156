{{ config(materialized='table') }}
{#- Grain: one row per tenant, settlement currency, account-local day and reporting category:
    the balance transactions in one pass, reduced to what the marts and tests read of them,
    with the P&L line and the currency's exponent. The one place that decides which reporting
    categories are revenue (docs: monthly_revenue_definition).
    daily_pnl, disputes_by_activity_date, source_positions, the day spine's bounds and the
    local-date test read this table instead of each scanning the lake's balance transactions
    again: a full build's cost is per lake row (ARCHITECTURE.md, "Full-build cost"). Rows are
    grouped first and classified after, so the P&L line and the currency are looked up once
    per group, and no transaction id is read. A table every run rebuilds from the lake views,
    which a windowed run scopes to the days it reads. -#}
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
        cast(sum(amount) as bigint) as amount,
        cast(sum(fee) as bigint) as fee,
        cast(sum(net) as bigint) as net,
        count(*) as balance_transactions,
        -- The identity every balance transaction keeps, counted per transaction (the sums could
        -- hide two errors that cancel); the model's data test requires 0.
        count(*) filter (where not coalesce(net = amount - fee, false))
            as net_not_amount_minus_fee,
        max(source_lsn) as max_lsn,
        min(created_at) as first_created_at,
        max(created_at) as last_created_at
    from balance_transactions
    group by tenant_id, currency, local_date, reporting_category
),

classified as (
    select
        grouped.tenant_id,
        grouped.currency,
        grouped.local_date,
        grouped.reporting_category,
        -- A currency the project does not know stops the build here, naming the tenant and day
        -- of its transactions (the lake partition to look at): a wrong exponent would scale
        -- every amount of that currency by a power of ten. (error(null) does not raise: the
        -- message must never be null.)
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
