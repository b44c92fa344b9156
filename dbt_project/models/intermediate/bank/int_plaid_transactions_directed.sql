{#- Each Plaid transaction split into inflow and outflow magnitudes (Plaid: positive = out),
    with its account's name and type. -#}
with transactions as (
    select * from {{ ref('stg_plaid__transactions') }}
),

accounts as (
    select * from {{ ref('stg_plaid__accounts') }}
),

directed as (
    select
        transactions.transaction_id,
        transactions.tenant_id,
        transactions.account_id,
        accounts.account_name,
        accounts.account_type,
        transactions.currency,
        transactions.local_date,
        coalesce(transactions.category_primary, 'UNCATEGORIZED') as category,
        transactions.is_pending,
        case when transactions.amount_minor < 0 then -transactions.amount_minor else 0 end
            as inflow,
        case when transactions.amount_minor > 0 then transactions.amount_minor else 0 end
            as outflow
    from transactions
    left join accounts
        on transactions.account_id = accounts.account_id
)

select * from directed
