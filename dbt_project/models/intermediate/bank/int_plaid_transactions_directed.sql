{#- Each Plaid transaction split into inflow and outflow magnitudes (Plaid: positive = out),
    with its account's name and type. -#}
with transactions as (
    select * from {{ ref('stg_plaid__transactions') }}
),

accounts as (
    select * from {{ ref('stg_plaid__accounts') }}
),

currencies as (
    select * from {{ ref('stg_ledger__currencies') }}
),

directed as (
    select
        transactions.transaction_id,
        transactions.tenant_id,
        transactions.account_id,
        accounts.account_name,
        accounts.account_type,
        -- A currency the project does not know stops the build on the row that reads it: its
        -- minor units could not be shown or summed with the right exponent. (error(null) does
        -- not raise: the message must never be null.)
        coalesce(
            currencies.currency,
            error(
                'unknown currency ''' || coalesce(transactions.currency, 'null')
                || ''' on Plaid transaction '
                || transactions.transaction_id || ': not in ledger.currencies'
            )
        ) as currency,
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
    left join currencies
        on transactions.currency = currencies.currency
)

select * from directed
