{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['payout_id'],
        on_schema_change='fail',
    )
}}
{#- Grain: one row per Stripe payout, filed under its creation's account-local day. Ties each
    payout to the balance transactions it swept (Stripe's payout reconciliation): for a
    completed automatic payout, amount = the sum of their net. -#}
with payouts as (
    select * from {{ ref('int_payouts_localized') }}
    where {{ in_window('local_date') }}
),

balance_transactions as (
    select * from {{ ref('stg_stripe__balance_transactions') }}
    where
        payout_id is not null
        and reporting_category not in ('payout', 'payout_reversal')
),

-- Every payout's sweep; the left join in `tied` keeps those of the window's payouts (the
-- lake views of a windowed run hold only the window's days and its payouts' sweeps).
swept as (
    select
        payout_id,
        count(*) as swept_transaction_count,
        sum(net) as swept_net
    from balance_transactions
    group by payout_id
),

tied as (
    select
        payouts.payout_id,
        payouts.tenant_id,
        payouts.currency,
        payouts.local_date,
        payouts.arrival_local_date,
        payouts.amount,
        payouts.status,
        payouts.is_automatic,
        payouts.reconciliation_status,
        coalesce(swept.swept_transaction_count, 0) as swept_transaction_count,
        cast(coalesce(swept.swept_net, 0) as bigint) as swept_net,
        payouts.amount - cast(coalesce(swept.swept_net, 0) as bigint) as tie_out_difference
    from payouts
    left join swept
        on payouts.payout_id = swept.payout_id
)

select * from tied
