{{ config(materialized='table') }}
{#- Grain: one row per tenant, presentment currency and account-local day with charges: the
    lake's charges in one pass, reduced to the counts the dispute marts and the source
    positions read (each of them would otherwise scan every charge again). A table every run
    rebuilds from the lake views, which a windowed run scopes to the days it reads. -#}
with charges as (
    select * from {{ ref('stg_stripe__charges') }}
),

daily as (
    select
        tenant_id,
        currency,
        local_date,
        count(*) as charges,
        count(*) filter (where status = 'succeeded') as charges_succeeded,
        sum(amount) filter (where status = 'succeeded') as charged_amount,
        max(source_lsn) as max_lsn
    from charges
    group by tenant_id, currency, local_date
)

select * from daily
