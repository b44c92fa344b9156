{{ config(materialized='table') }}
{#- The Plaid transactions reduced in one pass: one row per tenant, account, bank calendar day
    and Plaid primary category, with posted and pending inflow/outflow magnitudes apart.
    bank_cash_flow and source_positions read this table instead of each scanning every Plaid
    transaction of the lake again. A table that every run rebuilds from the lake views, which a
    windowed run scopes to the days it reads. -#}
with transactions as (
    select * from {{ ref('int_plaid_transactions_directed') }}
),

daily as (
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
        count(*) filter (where is_pending) as pending_count,
        max(source_lsn) as max_lsn
    from transactions
    group by tenant_id, account_id, local_date, category
)

select * from daily
