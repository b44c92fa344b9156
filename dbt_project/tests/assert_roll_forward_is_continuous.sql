-- Each day of the Stripe balance opens with the previous reported day's closing balance.
with ordered as (
    select
        tenant_id,
        currency,
        local_date,
        opening_balance,
        lag(closing_balance) over (
            partition by tenant_id, currency order by local_date
        ) as previous_closing
    from {{ ref('stripe_balance_roll_forward') }}
    {%- if has_window() %}
        -- The rebuilt days and the day before them: continuity across the carried balance.
        where local_date >= {{ window_start(none) }} - 1
    {%- endif %}
)

select *
from ordered
where previous_closing is not null and opening_balance <> previous_closing
