with source as (
    select * from {{ source('reconciliation', 'results') }}
),

renamed as (
    select
        check_run_id,
        checked_at,
        watermark_lsn,
        tenant_id,
        local_date,
        currency,
        table_name as lake_table,
        status,
        pg_rows,
        lake_rows,
        pg_amount,
        lake_amount,
        pg_fee,
        lake_fee,
        pg_net,
        lake_net,
        differing_keys
    from source
)

select * from renamed
