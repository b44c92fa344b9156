{{ config(materialized='table') }}
{#- The day spine: every tenant, in its default currency, for every local day of the run's
    window from the day the tenant was created (in its own zone). Marts left-join their facts to
    it, so a day without rows is an explicit zero row, never a missing day. A table, not a view:
    five marts read it, and as a view each of them would compute the bounds of a full build
    again. It reads the window, so every run rebuilds it. -#}
with tenants as (
    select * from {{ ref('stg_ledger__tenants') }}
),

currencies as (
    select * from {{ ref('stg_ledger__currencies') }}
),

bounds as (
    select
        {{ window_start(ref('int_balance_transactions_daily')) }} as first_day,
        {{ window_end(ref('int_balance_transactions_daily')) }} as end_day
),

days as (
    select cast(spine.range as date) as local_date
    from bounds
    cross join range(bounds.first_day, bounds.end_day, interval 1 day) as spine
),

tenant_days as (
    select
        tenants.tenant_id,
        tenants.default_currency as currency,
        days.local_date,
        cast(coalesce(
            currencies.currency_exponent,
            error(
                'unknown default currency ''' || coalesce(tenants.default_currency, 'null')
                || ''' of tenant '
                || tenants.tenant_id
            )
        ) as smallint) as currency_exponent
    from tenants
    cross join days
    left join currencies
        on tenants.default_currency = currencies.currency
    where days.local_date >= cast(timezone(tenants.time_zone, tenants.created_at) as date)
)

select * from tenant_days
