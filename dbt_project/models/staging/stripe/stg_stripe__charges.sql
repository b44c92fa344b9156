with source as (
    select * from {{ source('lake_stripe', 'stripe_charges') }}
),

renamed as (
    select
        id as charge_id,
        tenant_id,
        amount,
        amount_captured,
        amount_refunded,
        currency,
        status,
        paid as is_paid,
        captured as is_captured,
        refunded as is_refunded,
        disputed as is_disputed,
        balance_transaction as balance_transaction_id,
        created as created_at,
        local_date,
        _lsn as source_lsn
    from source
)

select * from renamed
