{{ config(materialized='table') }}
{#- Each dispute with its charge: the charge's local day is the dispute's cohort. A table, not
    a view: three marts read it, and as a view each would scan every charge again to find the
    few disputed ones. Every run rebuilds it (it is no view the marts asset may keep). A dispute
    whose charge is not in the lake keeps a null cohort, which this model's not_null test fails
    on: the join is the relationships test, without a second scan of every charge. -#}
with disputes as (
    select * from {{ ref('stg_stripe__disputes') }}
),

charges as (
    select * from {{ ref('stg_stripe__charges') }}
),

joined as (
    select
        disputes.dispute_id,
        disputes.tenant_id,
        disputes.currency,
        disputes.amount,
        disputes.status,
        disputes.reason,
        disputes.created_at,
        disputes.local_date,
        -- Inquiries (warning_*) are not chargebacks: the networks' dispute rate leaves them out.
        disputes.status like 'warning\_%' escape '\' as is_inquiry,
        disputes.charge_id,
        charges.local_date as charge_local_date,
        charges.amount as charge_amount,
        disputes.source_lsn
    from disputes
    left join charges
        on disputes.charge_id = charges.charge_id
)

select * from joined
