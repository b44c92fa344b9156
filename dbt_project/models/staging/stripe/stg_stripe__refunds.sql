with source as (
    select * from {{ source('lake_stripe', 'stripe_refunds') }}
),

renamed as (
    select
        id as refund_id,
        tenant_id,
        charge as charge_id,
        amount,
        currency,
        status,
        reason,
        balance_transaction as balance_transaction_id,
        failure_balance_transaction as failure_balance_transaction_id,
        created as created_at,
        local_date,
        _lsn as source_lsn
    from source
)

select * from renamed
