with source as (
    select * from {{ source('sor', 'plaid_accounts') }}
),

renamed as (
    select
        account_id,
        tenant_id,
        item_id,
        name as account_name,
        official_name as account_official_name,
        mask as account_mask,
        type as account_type,
        subtype as account_subtype,
        currency
    from source
)

select * from renamed
