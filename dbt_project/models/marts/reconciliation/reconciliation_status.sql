{#- Grain: one row per tenant, account-local day and currency that the reconciliation check has
    compared. The latest result per lake table decides: `mismatch` if any table differs,
    `match` if all compared tables match, else `skipped`. Empty until the check first runs. -#}
with results as (
    select * from {{ ref('stg_reconciliation__results') }}
),

latest as (
    select *
    from results
    qualify row_number() over (
        partition by tenant_id, local_date, currency, lake_table
        order by checked_at desc, check_run_id desc
    ) = 1
),

rolled as (
    select
        tenant_id,
        local_date,
        currency,
        case
            when bool_or(status = 'mismatch') then 'mismatch'
            when bool_and(status = 'match') then 'match'
            else 'skipped'
        end as status,
        count(*) as tables_compared,
        count(*) filter (where status = 'mismatch') as tables_mismatched,
        max(checked_at) as last_checked_at,
        arg_max(watermark_lsn, checked_at) as watermark_lsn,
        string_agg(
            case
                when status = 'mismatch' then lake_table || ': ' || coalesce(differing_keys, '')
            end,
            '; ' order by lake_table
        ) as mismatch_details
    from latest
    group by tenant_id, local_date, currency
)

select * from rolled
