{#- Grain: one row per tenant, settlement currency and account-local day (daily_pnl's rows).
    opening + activity + payouts = closing, where activity is the day's net balance change from
    everything but payouts and payouts is the (negative) net of payout transactions. The
    balance starts at zero on the tenant's first day in the lake. Rebuilt whole on every run:
    a running total depends on every earlier day, and daily_pnl is small. -#}
with daily as (
    select * from {{ ref('daily_pnl') }}
),

rolled as (
    select
        tenant_id,
        currency,
        local_date,
        currency_exponent,
        net as activity,
        payouts,
        cast(coalesce(sum(net + payouts) over (
            partition by tenant_id, currency
            order by local_date
            rows between unbounded preceding and 1 preceding
        ), 0) as bigint) as opening_balance
    from daily
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
