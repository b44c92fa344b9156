{#- Money is integer minor units; major units exist only for display, exactly: a DECIMAL
    product, never a division (DuckDB's DECIMAL / x is a DOUBLE). Exponents are Stripe's
    (ledger.currencies): 0 for JPY, 2 for USD and ISK, 3 for KWD. -#}
{% macro to_major(amount, exponent) -%}
    cast(cast({{ amount }} as decimal(38, 4)) * case {{ exponent }}
        when 0 then 1.0000 when 1 then 0.1000 when 2 then 0.0100 when 3 then 0.0010 when 4 then 0.0001
    end as decimal(38, 4))
{%- endmacro %}

{#- Every reporting_category of Stripe's API (stripe-python v16 enum). A balance transaction in a
    category outside this list is kept, in the `unreconciled` P&L line, never dropped. -#}
{% macro stripe_reporting_categories() -%}
    {{ return([
        'advance', 'advance_funding', 'anticipation_repayment', 'charge', 'charge_failure',
        'climate_order_purchase', 'climate_order_refund', 'connect_collection_transfer',
        'connect_reserved_funds', 'contribution', 'dispute', 'dispute_reversal', 'fee',
        'financing_paydown', 'financing_paydown_reversal', 'financing_payout',
        'financing_payout_reversal', 'issuing_authorization_hold', 'issuing_authorization_release',
        'issuing_dispute', 'issuing_transaction', 'network_cost', 'other_adjustment',
        'partial_capture_reversal', 'payout', 'payout_reversal', 'platform_earning',
        'platform_earning_refund', 'refund', 'refund_failure', 'risk_reserved_funds', 'tax',
        'topup', 'topup_reversal', 'transfer', 'transfer_reversal', 'unreconciled_customer_funds'
    ]) }}
{%- endmacro %}
