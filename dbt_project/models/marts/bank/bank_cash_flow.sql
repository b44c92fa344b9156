{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['tenant_id', 'account_id', 'local_date', 'category'],
        on_schema_change='fail',
    )
}}
{#- Grain: one row per tenant, Plaid account, bank calendar day and Plaid primary category
    with at least one transaction. Amounts are positive magnitudes in minor units of the
    account's currency: inflow = money in, outflow = money out (Plaid sends positive = out).
    Posted transactions are the cash flow; pending ones are shown apart and never added to it
    (a pending row is replaced by a posted row with another id when it settles). -#}
with transactions as (
    select * from {{ ref('int_plaid_transactions_directed') }}
    where {{ in_window('local_date') }}
),

flows as (
    select
        tenant_id,
        account_id,
        local_date,
        category,
        max(account_name) as account_name,
        max(account_type) as account_type,
        max(currency) as currency,
        cast(coalesce(sum(inflow) filter (where not is_pending), 0) as bigint) as posted_inflow,
        cast(coalesce(sum(outflow) filter (where not is_pending), 0) as bigint) as posted_outflow,
        count(*) filter (where not is_pending) as posted_count,
        cast(coalesce(sum(inflow) filter (where is_pending), 0) as bigint) as pending_inflow,
        cast(coalesce(sum(outflow) filter (where is_pending), 0) as bigint) as pending_outflow,
        count(*) filter (where is_pending) as pending_count
    from transactions
    group by tenant_id, account_id, local_date, category
),

netted as (
    select
        *,
        posted_inflow - posted_outflow as posted_net
    from flows
)

select * from netted
