{#- Each payout with its arrival as an account-local date, converted in the tenant's IANA zone
    (a DST day is 23 or 25 hours; a fixed offset would shift arrivals near midnight). A zone
    conversion costs ~15 us, and payouts share few arrival instants (Stripe's are day
    boundaries), so each distinct (zone, instant) is converted once and joined back. -#}
with payouts as (
    select * from {{ ref('stg_stripe__payouts') }}
),

tenants as (
    select * from {{ ref('stg_ledger__tenants') }}
),

zoned as (
    select
        payouts.*,
        tenants.time_zone
    from payouts
    inner join tenants
        on payouts.tenant_id = tenants.tenant_id
),

arrivals as (
    select distinct
        time_zone,
        arrival_at
    from zoned
),

arrival_days as (
    select
        time_zone,
        arrival_at,
        cast(timezone(time_zone, arrival_at) as date) as arrival_local_date
    from arrivals
),

localized as (
    select
        zoned.*,
        arrival_days.arrival_local_date
    from zoned
    left join arrival_days
        on
            zoned.time_zone = arrival_days.time_zone
            and zoned.arrival_at = arrival_days.arrival_at
)

select * from localized
