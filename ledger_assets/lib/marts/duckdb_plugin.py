"""A dbt-duckdb plugin that lets dbt's own connections read a lake on S3.

The marts database's lake views (``prepare.py``) name the lake's files; for an ``s3://`` lake
every connection that reads them needs DuckDB's httpfs extension (from its wheel: it cannot be
downloaded at run time) and an S3 secret, which DuckDB keeps per connection. dbt opens its own
connections, so ``dbt_project/profiles.yml`` names this plugin with the lake root, and it sets up
each connection exactly as the rest of the lake code does (``LakePath.configure_duckdb``). For a
local lake it does nothing.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin
from duckdb import DuckDBPyConnection

from ledger_assets.lib.lake.storage import S3_SCHEME, LakePath


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.lake_root = str(plugin_config.get("lake_root") or "")

    def configure_connection(self, conn: DuckDBPyConnection) -> None:
        if self.lake_root.startswith(S3_SCHEME):
            LakePath.at(self.lake_root).configure_duckdb(conn)
