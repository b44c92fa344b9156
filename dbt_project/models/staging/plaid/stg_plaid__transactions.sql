with source as (
    select * from {{ source('lake_plaid', 'plaid_transactions') }}
),

renamed as (
    select
        transaction_id,
        tenant_id,
        item_id,
        account_id,
        -- Plaid's sign, kept: positive = money out of the account.
        amount_minor,
        currency,
        date as posted_or_occurred_on,
        authorized_date as authorized_on,
        name as transaction_name,
        merchant_name,
        payment_channel,
        category_primary,
        category_detailed,
        pending as is_pending,
        pending_transaction_id,
        local_date,
        _lsn as source_lsn
    from source
)

select * from renamed
