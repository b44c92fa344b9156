{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['tenant_id', 'currency', 'cohort_date'],
        on_schema_change='fail',
    )
}}
{#- Grain: one row per tenant, presentment currency and cohort day (the account-local day of
    the disputed charges). A run rebuilds the cohorts of its window and also every cohort that a
    dispute created in the window belongs to, so a dispute arriving months after its charge
    updates the charge's cohort in the same run. dispute_rate = disputed charges / succeeded
    charges of the cohort (chargebacks only; inquiries are counted apart). -#}
with tenant_days as (
    select * from {{ ref('int_tenant_days') }}
),

disputes as (
    select * from {{ ref('int_disputes_joined_to_charges') }}
),

charges as (
    select * from {{ ref('int_charges_daily') }}
),

affected as (
    select
        tenant_id,
        currency,
        local_date as cohort_date
    from tenant_days
    -- The cohorts of disputes opened in the window, and the window's own cohorts that have
    -- disputes, also on days before the tenant's spine starts (history imported from before it
    -- was onboarded): a late-arrivals run for a cohort day must rebuild that day, or its row
    -- keeps the count from before the dispute.
    union
    select
        tenant_id,
        currency,
        charge_local_date as cohort_date
    from disputes
    where {{ in_window('local_date') }} or {{ in_window('charge_local_date') }}
),

-- Disputes are reduced to cohort days (the charges already are) before they meet `affected`:
-- the left joins in `joined` keep the affected cohorts only.
cohort_charges as (
    select
        tenant_id,
        currency,
        local_date as cohort_date,
        charges_succeeded,
        charged_amount
    from charges
    where charges_succeeded > 0
),

cohort_disputes as (
    select
        disputes.tenant_id,
        disputes.currency,
        disputes.charge_local_date as cohort_date,
        count(distinct disputes.charge_id) filter (where not disputes.is_inquiry)
            as disputed_charges,
        count(*) filter (where disputes.is_inquiry) as inquiries,
        sum(disputes.amount) filter (where not disputes.is_inquiry) as disputed_amount,
        count(*) filter (where disputes.status = 'won') as disputes_won,
        count(*) filter (where disputes.status = 'lost') as disputes_lost,
        count(*) filter (
            where not disputes.is_inquiry and disputes.status not in ('won', 'lost')
        ) as disputes_open,
        sum(disputes.amount) filter (where disputes.status = 'lost') as lost_amount
    from disputes
    group by disputes.tenant_id, disputes.currency, disputes.charge_local_date
),

joined as (
    select
        affected.tenant_id,
        affected.currency,
        affected.cohort_date,
        coalesce(cohort_charges.charges_succeeded, 0) as charges_succeeded,
        cast(coalesce(cohort_charges.charged_amount, 0) as bigint) as charged_amount,
        coalesce(cohort_disputes.disputed_charges, 0) as disputed_charges,
        coalesce(cohort_disputes.inquiries, 0) as inquiries,
        cast(coalesce(cohort_disputes.disputed_amount, 0) as bigint) as disputed_amount,
        coalesce(cohort_disputes.disputes_won, 0) as disputes_won,
        coalesce(cohort_disputes.disputes_lost, 0) as disputes_lost,
        coalesce(cohort_disputes.disputes_open, 0) as disputes_open,
        cast(coalesce(cohort_disputes.lost_amount, 0) as bigint) as lost_amount,
        cast(coalesce(cohort_disputes.disputed_charges, 0) as double)
        / nullif(cohort_charges.charges_succeeded, 0) as dispute_rate,
        cast(coalesce(cohort_disputes.disputed_amount, 0) as double)
        / nullif(cohort_charges.charged_amount, 0) as disputed_amount_rate
    from affected
    left join cohort_charges
        on
            affected.tenant_id = cohort_charges.tenant_id
            and affected.currency = cohort_charges.currency
            and affected.cohort_date = cohort_charges.cohort_date
    left join cohort_disputes
        on
            affected.tenant_id = cohort_disputes.tenant_id
            and affected.currency = cohort_disputes.currency
            and affected.cohort_date = cohort_disputes.cohort_date
)

select * from joined
