with source as (
    select * from {{ source('sor', 'currencies') }}
),

renamed as (
    select
        code as currency,
        cast(exponent as smallint) as currency_exponent
    from source
)

select * from renamed
