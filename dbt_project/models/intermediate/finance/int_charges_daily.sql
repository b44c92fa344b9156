{{ config(materialized='table') }}
{#- The charges reduced in one pass to what the marts need of them: one row per tenant,
    presentment currency and account-local day. disputes_by_activity_date,
    disputes_by_charge_cohort and source_positions read this table instead of each scanning
    every charge of the lake again. A table that every run rebuilds from the lake views, which
    a windowed run scopes to the days it reads. -#}
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
        cast(coalesce(sum(amount) filter (where status = 'succeeded'), 0) as bigint)
            as charged_amount,
        max(source_lsn) as max_lsn
    from charges
    group by tenant_id, currency, local_date
)

select * from daily
