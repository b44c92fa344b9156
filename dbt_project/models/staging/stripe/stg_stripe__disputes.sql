with source as (
    select * from {{ source('lake_stripe', 'stripe_disputes') }}
),

renamed as (
    select
        id as dispute_id,
        tenant_id,
        charge as charge_id,
        amount,
        currency,
        reason,
        status,
        is_charge_refundable,
        evidence_due_by as evidence_due_at,
        balance_transactions as balance_transaction_ids,
        created as created_at,
        local_date,
        _lsn as source_lsn
    from source
)

select * from renamed
