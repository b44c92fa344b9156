with source as (
    select * from {{ source('sor', 'tenants') }}
),

renamed as (
    select
        tenant_id,
        name as tenant_name,
        time_zone,
        default_currency,
        created_at
    from source
)

select * from renamed
