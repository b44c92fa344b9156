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

{#- The months overlapping the window: month_start of the first day's month up to the window's
    end (the months a windowed run rebuilds). -#}
{% macro in_window_months(column) -%}
    {%- if has_window() -%}
        ({{ column }} >= date_trunc('month', date '{{ _window_var("start_date") }}') and {{ column }} < date '{{ _window_var("end_date") }}')
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#- The window of the data tests: a test configured with `where: "__in_window__:<column>"`
    (dbt_project.yml sets it per folder) checks only the rows of the run's window, so a one-day
    run tests one day instead of rescanning whole tables; a full build tests everything.
    `__in_window_months__:<column>` keeps the months overlapping the window.
    Overrides dbt's get_where_subquery, the documented hook for templated `where` configs
    (YAML configs cannot call project macros). -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where and where.startswith('__in_window__:') -%}
        {%- set where = in_window(where.split(':', 1)[1]) -%}
    {%- elif where and where.startswith('__in_window_months__:') -%}
        {%- set where = in_window_months(where.split(':', 1)[1]) -%}
    {%- endif -%}
    {%- if where and where != 'true' -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {{- return(filtered) -}}
    {%- else -%}
        {{- return(relation) -}}
    {%- endif -%}
{%- endmacro %}

{#- Runs before every dbt command (on-run-start): refuses vars that ask for days the lake
    views do not cover. lib.marts.prepare records the views' window in lake._scope (nulls when
    they cover the whole lake); a full build over one-day views would silently be wrong. -#}
{% macro assert_lake_scope_covers_window() -%}
    {%- if has_window() -%}
        {%- set outside = "scope.start_date > date '" ~ _window_var('start_date')
            ~ "' or scope.end_date < date '" ~ _window_var('end_date') ~ "'" -%}
    {%- else -%}
        {%- set outside = "true" -%}
    {%- endif -%}
    select error(
        'the lake views cover only ' || scope.start_date || ' .. ' || scope.end_date
        || ' (exclusive): prepare the marts database for this window (lib.marts.prepare)'
    )
    from lake._scope as scope
    where scope.start_date is not null and ({{ outside }})
{%- endmacro %}
