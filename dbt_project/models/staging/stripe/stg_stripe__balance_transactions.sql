with source as (
    select * from {{ source('lake_stripe', 'stripe_balance_transactions') }}
),

renamed as (
    select
        id as balance_transaction_id,
        tenant_id,
        amount,
        fee,
        net,
        currency,
        exchange_rate,
        type as transaction_type,
        reporting_category,
        source as source_id,
        status,
        payout as payout_id,
        available_on as available_at,
        created as created_at,
        local_date,
        _lsn as source_lsn
    from source
)

select * from renamed
