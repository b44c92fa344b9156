with source as (
    select * from {{ source('lake_stripe', 'stripe_payouts') }}
),

renamed as (
    select
        id as payout_id,
        tenant_id,
        amount,
        currency,
        status,
        arrival_date as arrival_at,
        automatic as is_automatic,
        balance_transaction as balance_transaction_id,
        reconciliation_status,
        type as payout_type,
        created as created_at,
        local_date,
        _lsn as source_lsn
    from source
)

select * from renamed
