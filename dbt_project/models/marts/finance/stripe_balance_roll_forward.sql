{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['tenant_id', 'local_date'],
        on_schema_change='fail',
    )
}}
{#- Grain: one row per tenant, settlement currency and account-local day (daily_pnl's rows).
    opening + activity + payouts = closing, where activity is the day's net balance change from
    everything but payouts and payouts is the (negative) net of payout transactions. The
    balance starts at zero on the tenant's first day in the lake. A running total depends on
    every earlier day, so a windowed run rebuilds every day from the window's first day on,
    starting from the closing balance of the last earlier day this table holds.
    unique_key is the tenant-day, coarser than the grain: a rebuild replaces whole tenant-days
    (docs: missing_days_policy), so a currency without rows any more leaves no stale row. -#}
{%- set carry = is_incremental() and has_window() %}
with daily as (
    select * from {{ ref('daily_pnl') }}
    {%- if carry %}
        where local_date >= {{ window_start(none) }}
    {%- endif %}
),

carried as (
    {%- if carry %}
        select
            tenant_id,
            currency,
            arg_max(closing_balance, local_date) as balance
        from {{ this }}
        where local_date < {{ window_start(none) }}
        group by tenant_id, currency
    {%- else %}
        select
            cast(null as integer) as tenant_id,
            cast(null as varchar) as currency,
            cast(0 as bigint) as balance
        where false
    {%- endif %}
),

rolled as (
    select
        daily.tenant_id,
        daily.currency,
        daily.local_date,
        daily.currency_exponent,
        daily.net as activity,
        daily.payouts,
        cast(coalesce(carried.balance, 0) + coalesce(sum(daily.net + daily.payouts) over (
            partition by daily.tenant_id, daily.currency
            order by daily.local_date
            rows between unbounded preceding and 1 preceding
        ), 0) as bigint) as opening_balance
    from daily
    left join carried
        on
            daily.tenant_id = carried.tenant_id
            and daily.currency = carried.currency
),

closed as (
    select
        tenant_id,
        currency,
        local_date,
        currency_exponent,
        opening_balance,
        activity,
        payouts,
        opening_balance + activity + payouts as closing_balance
    from rolled
)

select * from closed
