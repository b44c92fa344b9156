{#- The date window of a run: vars start_date / end_date (ISO dates, end exclusive) passed by
    Dagster from the partition window. Unset means a full build over everything. -#}

{% macro _window_var(name) -%}
    {%- set value = var(name, none) -%}
    {%- if value is not none and not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', value | string) -%}
        {{ exceptions.raise_compiler_error("var " ~ name ~ " must be an ISO date (YYYY-MM-DD), got " ~ value) }}
    {%- endif -%}
    {{- return(value) -}}
{%- endmacro %}

{% macro has_window() -%}
    {{- return(_window_var('start_date') is not none and _window_var('end_date') is not none) -}}
{%- endmacro %}

{#- A predicate keeping the rows of `column` inside the window (true on a full build). -#}
{% macro in_window(column) -%}
    {%- if has_window() -%}
        ({{ column }} >= date '{{ _window_var("start_date") }}' and {{ column }} < date '{{ _window_var("end_date") }}')
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#- The first day of the window; on a full build the first local_date of `relation`. -#}
{% macro window_start(relation, column='local_date') -%}
    {%- if has_window() -%}
        date '{{ _window_var("start_date") }}'
    {%- else -%}
        (select min({{ column }}) from {{ relation }})
    {%- endif -%}
{%- endmacro %}

{#- The day after the window (exclusive); on a full build the day after the last local_date. -#}
{% macro window_end(relation, column='local_date') -%}
    {%- if has_window() -%}
        date '{{ _window_var("end_date") }}'
    {%- else -%}
        (select max({{ column }}) + 1 from {{ relation }})
    {%- endif -%}
{%- endmacro %}
