{#- Fails on every row with a null in one of `columns`: several not_null tests in one scan. For
    tables whose GROUP BY makes the columns unique (the daily aggregates), so only nulls can
    break their grain. -#}
{% test not_null_columns(model, columns) %}
select *
from {{ model }}
where {{ columns | join(' is null or ') }} is null
{% endtest %}
