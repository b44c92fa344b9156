"""The dbt marts (dagster-dbt).

dagster-dbt pulls in ``sqlglot[rs]``; with ``sqlglotc`` also installed, sqlglot still imports the
retired ``sqlglotrs`` shim, which emits a DeprecationWarning on import. It is a notice about a
third-party package we do not call, so it is silenced here, by its exact text, once.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="sqlglotrs is deprecated", category=DeprecationWarning
    )
    import sqlglot  # noqa: F401
