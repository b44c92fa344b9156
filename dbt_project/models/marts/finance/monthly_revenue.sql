{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['tenant_id', 'currency', 'month_start'],
        on_schema_change='fail',
    )
}}
{#- Grain: one row per tenant, settlement currency and account-local calendar month. The one
    definition of monthly revenue (docs: monthly_revenue_definition): the sum of daily_pnl's
    `revenue` over the month's local days. A windowed run rebuilds the whole months that
    overlap its window from daily_pnl, so a late change to any day is reflected in its month. -#}
with daily as (
    select * from {{ ref('daily_pnl') }}
    {%- if has_window() %}
        where
            local_date >= date_trunc('month', {{ window_start(none) }})
            and local_date < date_trunc('month', {{ window_end(none) }} - 1) + interval 1 month
    {%- endif %}
),

monthly as (
    select
        tenant_id,
        currency,
        cast(date_trunc('month', local_date) as date) as month_start,
        max(currency_exponent) as currency_exponent,
        cast(sum(revenue) as bigint) as revenue,
        cast(sum(gross_charges) as bigint) as gross_charges,
        cast(sum(refunds) as bigint) as refunds,
        cast(sum(disputes) as bigint) as disputes,
        cast(sum(dispute_reversals) as bigint) as dispute_reversals,
        cast(sum(fees) as bigint) as fees,
        cast(sum(net) as bigint) as net,
        count(*) as days_reported
    from daily
    group by tenant_id, currency, month_start
),

displayed as (
    select
        *,
        {{ to_major('revenue', 'currency_exponent') }} as revenue_major,
        {{ to_major('net', 'currency_exponent') }} as net_major
    from monthly
)

select * from displayed
