"""The marts' side of the lake: what dbt reads (views, reference copies) and what it writes."""
