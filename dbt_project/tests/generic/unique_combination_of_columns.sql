{#- Fails for every combination of `combination_of_columns` that occurs more than once, nulls
    allowed: for the reconciliation results' grains only. A grain whose columns must not be
    null takes unique_and_not_null, which checks both in the same scan. -#}
{% test unique_combination_of_columns(model, combination_of_columns) %}
select {{ combination_of_columns | join(', ') }}, count(*) as occurrences
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1
{% endtest %}
