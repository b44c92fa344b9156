{#- Each payout with its arrival as an account-local date, converted in the tenant's IANA zone
    (a DST day is 23 or 25 hours; a fixed offset would shift arrivals near midnight). -#}
with payouts as (
    select * from {{ ref('stg_stripe__payouts') }}
),

tenants as (
    select * from {{ ref('stg_ledger__tenants') }}
),

localized as (
    select
        payouts.*,
        tenants.time_zone,
        cast(timezone(tenants.time_zone, payouts.arrival_at) as date) as arrival_local_date
    from payouts
    inner join tenants
        on payouts.tenant_id = tenants.tenant_id
)

select * from localized
