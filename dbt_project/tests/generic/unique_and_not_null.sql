{#- A grain in one scan: fails for every combination of `columns` that occurs more than once or
    has a null in it, and for every combination whose rows have a null in one of
    `also_not_null`. Replaces a `unique` (or unique_combination_of_columns) test plus a
    `not_null` test per column, each of which would scan the model again: over a 200M-row lake
    the scans, not the checks, are the cost (ARCHITECTURE.md, "Full-build cost"). -#}
{% test unique_and_not_null(model, columns, also_not_null=[]) %}
select
    {{ columns | join(', ') }},
    count(*) as occurrences
    {%- for column in also_not_null %},
    count(*) - count({{ column }}) as {{ column }}_nulls
    {%- endfor %}
from {{ model }}
group by {{ columns | join(', ') }}
having
    count(*) > 1
    {%- for column in columns %}
    or {{ column }} is null
    {%- endfor %}
    {%- for column in also_not_null %}
    or count({{ column }}) < count(*)
    {%- endfor %}
{% endtest %}
