{#- Each Plaid transaction split into inflow and outflow magnitudes (Plaid: positive = out). Its
    account's name and type, and the check of its currency, are left to bank_cash_flow, which
    does both once per aggregated row instead of once per transaction. -#}
with transactions as (
    select * from {{ ref('stg_plaid__transactions') }}
),

directed as (
    select
        transaction_id,
        tenant_id,
        account_id,
        currency,
        local_date,
        coalesce(category_primary, 'UNCATEGORIZED') as category,
        is_pending,
        case when amount_minor < 0 then -amount_minor else 0 end as inflow,
        case when amount_minor > 0 then amount_minor else 0 end as outflow
    from transactions
)

select * from directed
