{#- Each balance transaction with its P&L line and its currency's exponent. The one place that
    decides which reporting categories are revenue (docs: monthly_revenue_definition). -#}
with balance_transactions as (
    select * from {{ ref('stg_stripe__balance_transactions') }}
),

currencies as (
    select * from {{ ref('stg_ledger__currencies') }}
),

classified as (
    select
        balance_transactions.*,
        -- A currency the project does not know stops the build here, naming the row: a wrong
        -- exponent would scale every amount of that currency by a power of ten. (error(null)
        -- does not raise: the message must never be null.)
        cast(coalesce(
            currencies.currency_exponent,
            error(
                'unknown currency ''' || coalesce(balance_transactions.currency, 'null')
                || ''' on balance transaction ' || balance_transactions.balance_transaction_id
                || ': not in ledger.currencies'
            )
        ) as smallint) as currency_exponent,
        case
            when balance_transactions.reporting_category in ('charge', 'partial_capture_reversal')
                then 'gross_charges'
            when balance_transactions.reporting_category in ('refund', 'refund_failure')
                then 'refunds'
            when balance_transactions.reporting_category = 'dispute' then 'disputes'
            when balance_transactions.reporting_category = 'dispute_reversal'
                then 'dispute_reversals'
            when balance_transactions.reporting_category = 'fee' then 'fees'
            when balance_transactions.reporting_category in ('payout', 'payout_reversal')
                then 'payouts'
            when balance_transactions.reporting_category in (
                '{{ stripe_reporting_categories() | join("', '") }}'  -- noqa: LT05
            ) then 'other_activity'
            else 'unreconciled'
        end as pnl_line
    from balance_transactions
    left join currencies
        on balance_transactions.currency = currencies.currency
),

flagged as (
    select
        *,
        pnl_line in ('gross_charges', 'refunds', 'disputes', 'dispute_reversals')
            as counts_as_revenue
    from classified
)

select * from flagged
