{#- Fails on every row where `expression` is not true (money identities, ranges).
    Our own, as dbt_utils cannot be installed offline. -#}
{% test expression_is_true(model, expression, where_clause=none, column_name=none) %}
select *
from {{ model }}
where not coalesce(({{ expression }}), false)
{%- if where_clause %} and ({{ where_clause }}){% endif %}
{% endtest %}
