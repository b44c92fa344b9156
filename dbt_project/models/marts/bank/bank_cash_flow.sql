{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['tenant_id', 'local_date'],
        on_schema_change='fail',
    )
}}
{#- Grain: one row per tenant, Plaid account, bank calendar day and Plaid primary category
    with at least one transaction; an account without any transaction on a day of the run's
    window has one explicit zero row in category NO_TRANSACTIONS (docs: missing_days_policy).
    Amounts are positive magnitudes in minor units of the account's currency: inflow = money
    in, outflow = money out (Plaid sends positive = out). Posted transactions are the cash
    flow; pending ones are shown apart and never added to it (a pending row is replaced by a
    posted row with another id when it settles).
    The rebuild replaces whole tenant-days (unique_key is coarser than the grain on purpose):
    every tenant-day of the window is in the new rows, so a category or account that no
    longer has transactions that day leaves no stale row behind. -#}
with transactions as (
    select * from {{ ref('int_plaid_transactions_directed') }}
    where {{ in_window('local_date') }}
),

tenant_days as (
    select distinct
        tenant_id,
        local_date
    from {{ ref('int_tenant_days') }}
),

accounts as (
    select * from {{ ref('stg_plaid__accounts') }}
),

currencies as (
    select * from {{ ref('stg_ledger__currencies') }}
),

-- Grouped by the raw keys first: the account's name and type (long strings) are joined to the
-- aggregated rows, not carried through the aggregation of every transaction. The currency is
-- a key, not an aggregate: an account's transactions in two currencies on one day and category
-- would be two rows, which the grain test fails on, instead of one sum of mixed units.
aggregated as (
    select
        tenant_id,
        account_id,
        local_date,
        category,
        currency,
        cast(coalesce(sum(inflow) filter (where not is_pending), 0) as bigint) as posted_inflow,
        cast(coalesce(sum(outflow) filter (where not is_pending), 0) as bigint) as posted_outflow,
        count(*) filter (where not is_pending) as posted_count,
        cast(coalesce(sum(inflow) filter (where is_pending), 0) as bigint) as pending_inflow,
        cast(coalesce(sum(outflow) filter (where is_pending), 0) as bigint) as pending_outflow,
        count(*) filter (where is_pending) as pending_count
    from transactions
    group by tenant_id, account_id, local_date, category, currency
),

flows as (
    select
        aggregated.tenant_id,
        aggregated.account_id,
        aggregated.local_date,
        aggregated.category,
        accounts.account_name,
        accounts.account_type,
        -- A currency the project does not know stops the build, naming the account and day:
        -- its minor units could not be shown or summed with the right exponent. (error(null)
        -- does not raise: the message must never be null.)
        coalesce(
            currencies.currency,
            error(
                'unknown currency ''' || coalesce(aggregated.currency, 'null')
                || ''' on Plaid transactions of account ' || aggregated.account_id || ' on '
                || aggregated.local_date || ': not in ledger.currencies'
            )
        ) as currency,
        aggregated.posted_inflow,
        aggregated.posted_outflow,
        aggregated.posted_count,
        aggregated.pending_inflow,
        aggregated.pending_outflow,
        aggregated.pending_count
    from aggregated
    left join accounts
        on aggregated.account_id = accounts.account_id
    left join currencies
        on aggregated.currency = currencies.currency
),

quiet as (
    select
        tenant_days.tenant_id,
        accounts.account_id,
        tenant_days.local_date,
        'NO_TRANSACTIONS' as category,
        accounts.account_name,
        accounts.account_type,
        accounts.currency,
        cast(0 as bigint) as posted_inflow,
        cast(0 as bigint) as posted_outflow,
        cast(0 as bigint) as posted_count,
        cast(0 as bigint) as pending_inflow,
        cast(0 as bigint) as pending_outflow,
        cast(0 as bigint) as pending_count
    from tenant_days
    inner join accounts
        on tenant_days.tenant_id = accounts.tenant_id
    anti join flows
        on
            accounts.account_id = flows.account_id
            and tenant_days.local_date = flows.local_date
),

combined as (
    select * from flows
    union all by name
    select * from quiet
),

netted as (
    select
        *,
        posted_inflow - posted_outflow as posted_net
    from combined
)

select * from netted
